"""The process that runs one local tuning job: `python -m sftflow.backends.local.runner JOB_DIR`.

PENDING → RUNNING → SUCCEEDED | FAILED | CANCELLED. Writes progress to status.json every
few seconds and a checkpoint every ~10 s; a restarted runner resumes from that checkpoint.
SIGTERM (sent by cancel) stops training at the next step and ends the job CANCELLED.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from pathlib import Path

from sftflow.infra import storage
from sftflow.backends.base import JobState
from sftflow.backends.local import jobs


class Cancelled(Exception):
    pass


def load_checkpoint(path: Path) -> dict:
    """A checkpoint as data only (`weights_only=True`): tensors and plain containers load; a
    pickle that would build any other object (and so could run code) is refused."""
    import pickle

    import torch

    try:
        return torch.load(path, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: not a checkpoint this runner wrote, refused ({first}); "
                         "delete it to restart the job from step 0") from None


def train_params(meta: dict) -> dict:
    """TrainParams' fields from spec.json: the request's `train` (LocalTuner.request), or the flat spec of a job
    an earlier version created (a runner restarted after an upgrade resumes it)."""
    spec = meta["spec"]
    if "train" in spec:
        return dict(spec["train"])
    return {"lora_rank": int(spec["adapter_size"]), "epochs": int(spec["epochs"]),
            "lr_multiplier": float(spec["learning_rate_multiplier"]), "seed": int(spec.get("seed", 0)),
            "budget_s": float(spec.get("budget_s") or meta["default_budget_s"])}


class Runner:
    def __init__(self, job_dir: Path):
        self.dir = job_dir
        self.meta = jobs.read_json(job_dir / "spec.json")
        self.spec = self.meta["spec"]
        self.job_id = self.meta["job_id"]
        self._term = False
        signal.signal(signal.SIGTERM, self._on_term)

    def _on_term(self, *_):
        self._term = True

    def stop_requested(self) -> bool:
        return self._term or (self.dir / "cancel.request").exists()

    def status(self, **fields) -> None:
        jobs.update_status(self.dir, **fields)

    def _data(self, uri: str | None, name: str) -> str | None:
        if not uri:
            return None
        local = self.dir / "data" / name
        if not local.exists():
            storage.download(uri, local)
        return str(local)

    def _trainer(self):
        from sftflow.backends.local import extractive, extractive_training
        from sftflow.backends.local.text import read_examples
        from sftflow.backends.local.training import TrainParams

        s = self.spec
        train = read_examples(self._data(s["train_uri"], "train.jsonl"))
        val_path = self._data(s.get("val_uri"), "val.jsonl")
        val = read_examples(val_path) if val_path else []
        params = TrainParams(**train_params(self.meta),
                             checkpoint_every_s=float(os.environ.get("SFTFLOW_LOCAL_CHECKPOINT_S", "10")))
        if s["base_model"] == extractive.MODEL_NAME:
            # work_dir/jobs/<job>/ → work_dir/sentence-cache: encoded sentences shared by runs
            return extractive_training.Trainer(params, train, val, cache_dir=self.dir.parent.parent / "sentence-cache")
        from sftflow.backends.local import generative

        return generative.CausalTrainer(params, train, val, s["base_model"])

    def _checkpoint(self, state: dict) -> None:
        import torch

        with storage.atomic_local_writer(self.dir / "checkpoint.pt") as f:
            torch.save(state, f)
        self.status(checkpoint_step=state["step"])

    def _report(self, info: dict) -> None:
        self.status(step=info["step"], total_steps=info["total_steps"], epoch=info["epoch"],
                    best_step=info.get("best_step"),
                    metrics=info["metrics"], stats=self.stats(info))

    def stats(self, info: dict) -> dict:
        t = self.trainer
        el = max(info.get("elapsed_s", 0.0), 1e-9)
        seen = info["step"] * t.p.batch_articles  # examples (articles) processed
        import resource

        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
        return {"example_count": len(t.train), "val_example_count": len(t.val),
                "peak_rss_mb": round(peak_mb, 1), "cpu_s": round(time.process_time(), 1),
                "train_elapsed_s": info.get("elapsed_s"), "examples_per_s": round(seen / el, 2),
                **getattr(t, "extra_stats", {})}

    def run(self) -> int:
        from sftflow.backends.local.training import set_threads

        self.status(state=JobState.RUNNING.value, pid=os.getpid(),
                    pid_start=jobs.proc_start_time(os.getpid()), phase="loading")
        set_threads()
        self.trainer = t = self._trainer()
        if self.stop_requested():
            raise Cancelled

        def on_prep(done, total):
            self.status(phase=f"encoding {done}/{total}")
            if self.stop_requested():
                raise Cancelled

        t.prepare(on_prep)
        ckpt = self.dir / "checkpoint.pt"
        if ckpt.exists():
            t.load_state(load_checkpoint(ckpt))
        self.status(phase="training", total_steps=t.total_steps, step=t.step,
                    stats=self.stats({"step": t.step, "elapsed_s": t.elapsed_s}))
        why = t.run(self._report, self._checkpoint, self.stop_requested, self._epoch_checkpoint)
        if why == "stopped":
            self._checkpoint(t.state())
            raise Cancelled
        self.status(phase="saving", stats=self.stats({"step": t.step, "elapsed_s": t.elapsed_s}))
        out = t.save(self.dir / "model")
        if hasattr(t, "close"):
            t.close()
        root = storage.join(self.meta["storage_root"], "models", self.job_id)
        for p in out:
            storage.upload_file(p, storage.join(root, p.name))
        kept = jobs.read_json(self.dir / "status.json").get("checkpoints", [])
        epoch = -(-t.step // t.steps_per_epoch)  # the epoch training ended in (early stop / budget: before the last)
        final = {"checkpoint_id": str(epoch), "epoch": epoch, "step": t.step, "endpoint": root}
        self.status(state=JobState.SUCCEEDED.value, phase="done", endpoint=root, tuned_model=f"local:{self.job_id}",
                    stop_reason=why, checkpoints=[*kept, final] if kept else [])
        return 0

    def _epoch_checkpoint(self, epoch: int) -> None:
        """The weights after `epoch`, servable like the final model (<models>/<job>/checkpoints/epoch-N):
        listed in status.json only once uploaded whole, in the shape of Vertex's tuned_model.checkpoints."""
        t = self.trainer
        out = t.save(self.dir / "checkpoints" / f"epoch-{epoch}")
        uri = storage.join(self.meta["storage_root"], "models", self.job_id, "checkpoints", f"epoch-{epoch}")
        for p in sorted(out, key=lambda p: p.name == "config.json"):  # config.json last: its presence = complete
            storage.upload_file(p, storage.join(uri, p.name))
        kept = [c for c in jobs.read_json(self.dir / "status.json").get("checkpoints", []) if c["epoch"] != epoch]
        self.status(checkpoints=[*kept, {"checkpoint_id": str(epoch), "epoch": epoch, "step": t.step,
                                         "endpoint": uri}])


def main(argv: list[str]) -> int:
    job_dir = Path(argv[0]).resolve()
    r = Runner(job_dir)
    t0 = time.monotonic()
    try:
        return r.run()
    except Cancelled:
        r.status(state=JobState.CANCELLED.value, phase="cancelled")
        return 0
    except Exception as exc:  # the job fails; the message names what broke
        traceback.print_exc()
        r.status(state=JobState.FAILED.value, error=f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        print(f"runner finished after {time.monotonic() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
