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
import zlib
from dataclasses import replace
from pathlib import Path

import torch

from sftflow.backends.local.text import Example
from sftflow.backends.local.training import BudgetedTrainer, TrainParams

BASE_LR = 2e-4
MAX_LEN = 512
BATCH = 4


def load_base(path: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
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


class CausalTrainer(BudgetedTrainer):
    """LoRA SFT of a causal LM; same interface as extractive.Trainer (the loop is BudgetedTrainer's)."""

    def __init__(self, params: TrainParams, train: list[Example], val: list[Example] | None, base_model: str):
        super().__init__(replace(params, batch_articles=BATCH))
        self.base_model = base_model
        torch.manual_seed(params.seed)
        self.tok, model = load_base(base_model)
        self.model = add_lora(model, params.lora_rank)
        self.model.eval()  # LoRA dropout is 0; keeps runs deterministic
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=BASE_LR * params.lr_multiplier, weight_decay=0.0)
        self.train_raw, self.val_raw = train, val or []

    def prepare(self, on_progress=None) -> None:
        self.train = [encode_example(self.tok, e) for e in self.train_raw]
        self.val = [encode_example(self.tok, e) for e in self.val_raw]
        if not self.train:
            raise ValueError("training data: no examples")
        self.extra_stats = {"train_tokens": sum(len(i) for i, _ in self.train)}
        if on_progress:
            on_progress(len(self.train), len(self.train))

    def _loss(self, batch: list[tuple[list[int], list[int]]]) -> torch.Tensor:
        T = max(len(i) for i, _ in batch)
        pad = self.tok.pad_token_id
        ids = torch.tensor([i + [pad] * (T - len(i)) for i, _ in batch])
        lab = torch.tensor([lb + [-100] * (T - len(lb)) for _, lb in batch])
        att = torch.tensor([[1] * len(i) + [0] * (T - len(i)) for i, _ in batch])
        return self.model(input_ids=ids, attention_mask=att, labels=lab).loss

    def val_loss(self) -> float | None:
        """Mean of the per-batch token-mean losses over the validation set."""
        if not self.val:
            return None
        with torch.no_grad():
            return sum(float(self._loss(self.val[i:i + BATCH])) for i in range(0, len(self.val), BATCH)) / math.ceil(
                len(self.val) / BATCH)

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
