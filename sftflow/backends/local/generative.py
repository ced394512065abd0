"""LoRA SFT and generation for a user's own Hugging Face causal LM (any base model other
than `minilm-extractive`): same job process and interfaces as the extractive model.

Prompts use the tokenizer's chat template when it has one, else "User: ...\\nModel: ";
the loss covers only the model turn. Generation is greedy at temperature 0, else sampled
with a seed fixed per prompt, so repeated runs give the same text.
"""

from __future__ import annotations

import json
import math
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import torch

from sftflow.backends.local.extractive import TrainParams
from sftflow.backends.local.text import Example

BASE_LR = 2e-4
MAX_LEN = 512
BATCH = 4


def load_base(path: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    model.eval()
    return tok, model


def prompt_text(tok, prompt: str, system: str | None = None) -> str:
    """The text the model sees before its answer."""
    if getattr(tok, "chat_template", None):
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    head = f"{system}\n" if system else ""
    return f"{head}User: {prompt}\nModel: "


def encode_example(tok, ex: Example, max_len: int = MAX_LEN) -> tuple[list[int], list[int]]:
    """(input ids, labels) with labels -100 on the prompt; long prompts lose their start."""
    p = tok(prompt_text(tok, ex.prompt, ex.system), add_special_tokens=False)["input_ids"]
    a = tok(ex.answer, add_special_tokens=False)["input_ids"]
    if tok.eos_token_id is not None:
        a = a + [tok.eos_token_id]
    a = a[: max_len // 2] if len(a) > max_len // 2 and len(p) + len(a) > max_len else a
    p = p[max(0, len(p) + len(a) - max_len):]
    return p + a, [-100] * len(p) + a


def add_lora(model, rank: int):
    from peft import LoraConfig, get_peft_model

    try:
        cfg = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
        return get_peft_model(model, cfg)
    except ValueError:  # architecture without peft defaults
        cfg = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, bias="none",
                         task_type="CAUSAL_LM", target_modules="all-linear")
        return get_peft_model(model, cfg)


class CausalTrainer:
    """Same duck-typed interface as extractive.Trainer (prepare/run/state/load_state/save)."""

    def __init__(self, params: TrainParams, train: list[Example], val: list[Example] | None, base_model: str):
        self.p = params
        self.p.batch_articles = BATCH
        self.base_model = base_model
        torch.manual_seed(params.seed)
        self.tok, model = load_base(base_model)
        self.model = add_lora(model, params.lora_rank)
        self.model.eval()  # LoRA dropout is 0; keeps runs deterministic
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=BASE_LR * params.lr_multiplier, weight_decay=0.0)
        self.train_raw, self.val_raw = train, val or []
        self.step, self.elapsed_s = 0, 0.0
        self.metrics: dict[str, list[tuple[int, float]]] = {"train_loss": [], "val_loss": []}
        self.extra_stats: dict = {}

    def prepare(self, on_progress=None) -> None:
        self.train = [encode_example(self.tok, e) for e in self.train_raw]
        self.val = [encode_example(self.tok, e) for e in self.val_raw]
        if not self.train:
            raise ValueError("training data: no examples")
        self.extra_stats = {"train_tokens": sum(len(i) for i, _ in self.train)}
        if on_progress:
            on_progress(len(self.train), len(self.train))

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train) / BATCH)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.p.epochs

    def _loss(self, batch: list[tuple[list[int], list[int]]]) -> torch.Tensor:
        T = max(len(i) for i, _ in batch)
        pad = self.tok.pad_token_id
        ids = torch.tensor([i + [pad] * (T - len(i)) for i, _ in batch])
        lab = torch.tensor([lb + [-100] * (T - len(lb)) for _, lb in batch])
        att = torch.tensor([[1] * len(i) + [0] * (T - len(i)) for i, _ in batch])
        return self.model(input_ids=ids, attention_mask=att, labels=lab).loss

    def val_loss(self) -> float | None:
        if not self.val:
            return None
        with torch.no_grad():
            return sum(float(self._loss(self.val[i:i + BATCH])) for i in range(0, len(self.val), BATCH)) / math.ceil(
                len(self.val) / BATCH)

    def order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.p.seed * 1000 + epoch)
        return torch.randperm(len(self.train), generator=g).tolist()

    def state(self) -> dict:
        from peft import get_peft_model_state_dict

        return {"step": self.step, "elapsed_s": self.elapsed_s, "metrics": self.metrics,
                "adapter": get_peft_model_state_dict(self.model), "opt": self.opt.state_dict()}

    def load_state(self, st: dict) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.model, st["adapter"])
        self.opt.load_state_dict(st["opt"])
        self.step, self.elapsed_s = st["step"], st["elapsed_s"]
        self.metrics = {k: [tuple(x) for x in v] for k, v in st["metrics"].items()}

    def run(self, on_report: Callable[[dict], None], on_checkpoint: Callable[[dict], None],
            should_stop: Callable[[], bool]) -> str:
        started = time.monotonic() - self.elapsed_s
        last_report = last_ckpt = time.monotonic()
        why, recent = "done", []
        if not self.metrics["val_loss"] and (v0 := self.val_loss()) is not None:
            self.metrics["val_loss"].append((self.step, v0))  # where the curve starts
        while self.step < self.total_steps:
            if should_stop():
                why = "stopped"
                break
            if time.monotonic() - started >= self.p.budget_s:
                why = "budget"
                break
            epoch, j = divmod(self.step, self.steps_per_epoch)
            idx = self.order(epoch)[j * BATCH:(j + 1) * BATCH]
            self.opt.zero_grad()
            loss = self._loss([self.train[i] for i in idx])
            loss.backward()
            self.opt.step()
            self.step += 1
            recent.append(loss.item())
            now = time.monotonic()
            self.elapsed_s = now - started
            if now - last_report >= self.p.report_every_s or self.step == self.total_steps:
                self.metrics["train_loss"].append((self.step, sum(recent) / len(recent)))
                recent, last_report = [], now
                on_report(self.info(epoch))
            if now - last_ckpt >= self.p.checkpoint_every_s:
                on_checkpoint(self.state())
                last_ckpt = now
        v = self.val_loss()
        if v is not None:
            self.metrics["val_loss"].append((self.step, v))
        on_report(self.info(min(self.step, self.total_steps - 1) // self.steps_per_epoch))
        return why

    def info(self, epoch: int) -> dict:
        return {"step": self.step, "total_steps": self.total_steps, "epoch": epoch,
                "elapsed_s": round(self.elapsed_s, 2), "metrics": self.metrics}

    def save(self, out_dir: str | Path) -> list[Path]:
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(self.model).items()}
        save_file(sd, str(d / "adapter.safetensors"))
        pc = self.model.peft_config["default"]
        cfg = {"kind": "causal", "base_model": self.base_model, "lora_rank": pc.r,
               "target_modules": sorted(pc.target_modules)}
        (d / "config.json").write_text(json.dumps(cfg, indent=2))
        return [d / "adapter.safetensors", d / "config.json"]


class CausalModel:
    """A causal LM (optionally with a tuned adapter) answering prompts; thread-safe."""

    def __init__(self, tok, model, seed: int = 0):
        self.tok, self.model, self.seed = tok, model, seed
        self._lock = threading.Lock()

    @classmethod
    def base(cls, path: str, seed: int = 0) -> CausalModel:
        tok, model = load_base(path)
        return cls(tok, model, seed)

    @classmethod
    def load(cls, model_dir: str | Path, seed: int = 0) -> CausalModel:
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
        from safetensors.torch import load_file

        d = Path(model_dir)
        cfg = json.loads((d / "config.json").read_text())
        tok, model = load_base(cfg["base_model"])
        lc = LoraConfig(r=cfg["lora_rank"], lora_alpha=2 * cfg["lora_rank"], lora_dropout=0.0, bias="none",
                        task_type="CAUSAL_LM", target_modules=cfg["target_modules"])
        model = get_peft_model(model, lc)
        set_peft_model_state_dict(model, load_file(str(d / "adapter.safetensors")))
        model = model.merge_and_unload()
        model.eval()
        return cls(tok, model, seed)

    def answer(self, prompt: str, params) -> tuple[str, int, int, str]:
        ids = self.tok(prompt_text(self.tok, prompt), add_special_tokens=False, return_tensors="pt")["input_ids"]
        ids = ids[:, -MAX_LEN:]
        sample = params.temperature > 0
        kw = {"do_sample": sample, "max_new_tokens": params.max_output_tokens,
              "pad_token_id": self.tok.pad_token_id, "eos_token_id": self.tok.eos_token_id}
        if sample:
            kw.update(temperature=params.temperature, top_k=0, top_p=1.0)
        else:
            kw.update(temperature=None, top_k=None, top_p=None)
        with self._lock, torch.inference_mode():
            if sample:
                torch.manual_seed(self.seed ^ zlib.crc32(prompt.encode()))
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kw)
        new = out[0, ids.shape[1]:].tolist()
        ended = self.tok.eos_token_id is not None and self.tok.eos_token_id in new
        if ended:
            new = new[: new.index(self.tok.eos_token_id)]
        finish = "STOP" if ended or len(new) < params.max_output_tokens else "MAX_TOKENS"
        return self.tok.decode(new, skip_special_tokens=True).strip(), ids.shape[1], len(new), finish
