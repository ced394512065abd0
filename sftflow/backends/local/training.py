"""The budgeted, resumable training loop shared by the local trainers (extractive scorer,
causal LM), so that both stop, resume, report and checkpoint in exactly the same way.

Deterministic on CPU for the same data, seed and thread count: batches come from a
per-epoch permutation of the seed, so a resumed run replays the same order, and the
validation loss is measured on a step schedule (not the wall clock), so the kept "best"
state does not depend on how busy the machine was.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sftflow.config import setting_default


@dataclass
class TrainParams:
    lora_rank: int = setting_default("adapter_size")
    lora_layers: int = 1  # top layers the extractive scorer tunes (the others are encoded once)
    epochs: int = setting_default("epochs")
    lr_multiplier: float = setting_default("learning_rate_multiplier")
    budget_s: float = setting_default("local_train_budget_s")  # wall clock for training, summed over restarts
    seed: int = setting_default("seed")
    batch_articles: int = 8  # examples per step (the causal trainer uses its own)
    checkpoint_every_s: float = 10.0
    report_every_s: float = 2.0
    val_per_epoch: int = 4  # validation-loss measurements per epoch (plus one at the start)
    patience_epochs: float = 1.0  # stop after this many epochs without a new best validation loss (0: never)


class BudgetedTrainer:
    """Owns the step counter, elapsed time, loss curves and the loop.

    A subclass sets `model` (a peft model), `opt`, and in `prepare` `train`/`val`; it
    implements `_loss(batch)` and `val_loss()`, and keeps any weights beyond the LoRA
    adapter in `extra_state`/`load_extra_state`.
    """

    def __init__(self, params: TrainParams):
        self.p = params
        self.step, self.elapsed_s = 0, 0.0
        self.metrics: dict[str, list[tuple[int, float]]] = {"train_loss": [], "val_loss": []}
        self.extra_stats: dict = {}
        self.best: dict | None = None  # {"step", "val_loss", "weights"}
        self._base_lrs: list[float] | None = None

    # -- hooks
    def _loss(self, batch: list) -> torch.Tensor:
        raise NotImplementedError

    def val_loss(self) -> float | None:
        raise NotImplementedError

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, st: dict) -> None:
        pass

    def lr_factor(self, step: int) -> float | None:
        """Multiplier of the optimizer's initial learning rate at `step`; None: constant."""
        return None

    def snapshot(self) -> dict | None:
        """The trained weights, to keep the best-by-validation state (None: not kept)."""
        return None

    def restore(self, snap: dict) -> None:
        pass

    # -- schedule
    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train) / self.p.batch_articles)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.p.epochs

    def order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.p.seed * 1000 + epoch)
        return torch.randperm(len(self.train), generator=g).tolist()

    # -- checkpoints
    def state(self) -> dict:
        from peft import get_peft_model_state_dict

        return {"step": self.step, "elapsed_s": self.elapsed_s, "metrics": self.metrics,
                "adapter": get_peft_model_state_dict(self.model), **self.extra_state(),
                "opt": self.opt.state_dict(), "best": self.best}

    def load_state(self, st: dict) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.model, st["adapter"])
        self.load_extra_state(st)
        self.opt.load_state_dict(st["opt"])
        self.step, self.elapsed_s = st["step"], st["elapsed_s"]
        self.metrics = {k: [tuple(x) for x in v] for k, v in st["metrics"].items()}
        self.best = st.get("best")

    # -- the loop
    @property
    def val_every(self) -> int:
        return max(1, self.steps_per_epoch // max(1, self.p.val_per_epoch))

    def _record_val(self) -> None:
        v = self.val_loss()
        if v is None:
            return
        self.metrics["val_loss"].append((self.step, v))
        if self.best is None or v < self.best["val_loss"]:
            snap = self.snapshot()
            if snap is not None:
                self.best = {"step": self.step, "val_loss": v, "weights": snap}

    def _stale(self) -> bool:
        """Early stop: `patience_epochs` of steps have passed since the best validation loss
        (never within the first epoch, so that one full epoch is always done)."""
        return bool(self.p.patience_epochs and self.best and self.step >= self.steps_per_epoch
                    and self.step - self.best["step"] >= self.p.patience_epochs * self.steps_per_epoch)

    def _set_lr(self) -> None:
        f = self.lr_factor(self.step)
        if f is None:
            return
        if self._base_lrs is None:
            self._base_lrs = [g.get("initial_lr", g["lr"]) for g in self.opt.param_groups]
            for g, lr in zip(self.opt.param_groups, self._base_lrs):
                g["initial_lr"] = lr
        for g, lr in zip(self.opt.param_groups, self._base_lrs):
            g["lr"] = lr * f

    def run(self, on_report: Callable[[dict], None], on_checkpoint: Callable[[dict], None],
            should_stop: Callable[[], bool], on_epoch_end: Callable[[int], None] | None = None) -> str:
        """Train until all epochs are done ('done'), the budget is spent ('budget'), the
        validation loss stopped improving ('early_stop') or `should_stop()` ('stopped').
        Reports and checkpoints on the wall clock; the validation loss is measured at the
        start, every `val_every` steps and at the end, and the best-by-validation weights
        are the ones kept when the run ends (unless stopped, which resumes later).
        `on_epoch_end(epoch)` runs after every epoch but the last (per-epoch checkpoints, as Vertex keeps)."""
        if not self.metrics["val_loss"]:
            self._record_val()  # where the curve starts (a one-off, like encoding: not in the budget)
        started = time.monotonic() - self.elapsed_s
        last_report = last_ckpt = time.monotonic()
        spe, bs = self.steps_per_epoch, self.p.batch_articles
        why = "done"
        recent: list[float] = []
        while self.step < self.total_steps:
            if should_stop():
                why = "stopped"
                break
            if time.monotonic() - started >= self.p.budget_s:
                why = "budget"
                break
            if self._stale():
                why = "early_stop"
                break
            epoch, j = divmod(self.step, spe)
            idx = self.order(epoch)[j * bs:(j + 1) * bs]
            self._set_lr()
            self.opt.zero_grad()
            loss = self._loss([self.train[i] for i in idx])
            loss.backward()
            self.opt.step()
            self.step += 1
            recent.append(loss.item())
            if on_epoch_end is not None and self.step % spe == 0 and self.step < self.total_steps:
                on_epoch_end(self.step // spe)
            if self.step % self.val_every == 0 and self.step < self.total_steps:
                self._record_val()
            now = time.monotonic()
            self.elapsed_s = now - started
            if now - last_report >= self.p.report_every_s or self.step == self.total_steps:
                self.metrics["train_loss"].append((self.step, sum(recent) / len(recent)))
                recent, last_report = [], now
                on_report(self.info(epoch))
            if now - last_ckpt >= self.p.checkpoint_every_s:
                on_checkpoint(self.state())
                last_ckpt = now
        if why != "stopped":
            if not self.metrics["val_loss"] or self.metrics["val_loss"][-1][0] != self.step:
                self._record_val()
            if self.best is not None and self.best["step"] != self.step:
                self.restore(self.best["weights"])
        on_report(self.info(min(self.step, self.total_steps - 1) // spe))
        return why

    def info(self, epoch: int) -> dict:
        return {"step": self.step, "total_steps": self.total_steps, "epoch": epoch,
                "elapsed_s": round(self.elapsed_s, 2), "metrics": self.metrics,
                "best_step": self.best["step"] if self.best else None}


def set_threads() -> int:
    """Use every core this process may run on (2 here); returns the count."""
    n = int(os.environ.get("SFTFLOW_TORCH_THREADS", "0")) or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n
