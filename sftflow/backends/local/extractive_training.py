"""Training the `minilm-extractive` scorer (see extractive.py for the model and its inference).

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

import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from sftflow.backends.local import sentence_cache
from sftflow.backends.local.extractive import (
    MAX_SENTENCES,
    MODEL_NAME,
    N_FEATURES,
    ScorerConfig,
    add_lora,
    centroid_of,
    features,
    load_encoder,
    lower_layers,
    make_head,
    save_tuned,
    tokenize,
    upper_layers,
)
from sftflow.backends.local.text import Example, split_prompt, split_sentences
from sftflow.backends.local.training import BudgetedTrainer, TrainParams

BASE_LR = 2e-3  # LoRA
HEAD_LR = 3e-2  # the linear head: its feature weights must move O(1) within one short epoch
WARMUP = 0.1  # share of the steps over which the learning rate rises to its peak
LABEL_TAU = 0.1  # softmax temperature turning per-sentence ROUGE into a target distribution
ORACLE_WEIGHT = 0.5  # target = this × uniform over the greedy oracle + the rest × soft ROUGE
TRAIN_SENTENCES = 10  # sentences scored per article per training step (the best + random others)
UPPER_CHUNK = 20  # sentences per pass through the tuned top layers (grouped by length)
PROBE_STEPS = 300  # full-batch steps of the head alone on the cached base embeddings (cheap)
PROBE_LR = 1e-2


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


@lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16, AMX); elsewhere bfloat16 is
    emulated and slower than float32. Private torch probes, so any failure means no."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except Exception:  # noqa: BLE001 - a probe missing from another torch version
        return False


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
        """(lower-layer activations, mask, base sentence embeddings) of a batch of sentences; in
        bfloat16 where the CPU computes it natively (half the time; stored as float16 anyway)."""
        n = self.p.lora_layers
        ids, mask = tokenize(self.tok, chunk, self.cfg.max_tokens)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=native_bf16()):
            h = lower_layers(self.model, ids, mask, n)
            with self.model.disable_adapter():
                base = upper_layers(self.model, h, mask, n)
        return h.float(), mask, base.float()

    def prepare(self, on_progress=None) -> None:
        """Label every article and encode its sentences once (reusing a cache of the same
        content); the training budget starts after this."""
        t0, c0 = time.monotonic(), time.process_time()
        groups = [_usable(self.train_raw), _usable(self.val_raw)]
        if not groups[0]:
            raise ValueError("training data: no usable example (each needs ≥ 2 article sentences and an answer)")
        uniq = list(dict.fromkeys(s for g in groups for sents, _ in g for s in sents))
        settings = {"model": MODEL_NAME, "lower": self.model.config.num_hidden_layers - self.p.lora_layers,
                    "max_tokens": self.cfg.max_tokens, "bf16": native_bf16()}
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

    def _embed(self, ids: list[int]) -> torch.Tensor:
        """Tuned embeddings of cached sentences `ids` (in that order), run through the top layers in
        length-sorted chunks: padding every sentence to the batch's longest would double the work."""
        order = torch.argsort(self.cache.lengths(ids), stable=True)
        parts = []
        for chunk in order.split(UPPER_CHUNK):
            hid, msk = self.cache.hidden([ids[int(i)] for i in chunk])
            parts.append(upper_layers(self.model, hid, msk, self.p.lora_layers))
        return torch.cat(parts)[torch.argsort(order)]

    def _batch_loss(self, arts: list[ArticleRef], g: torch.Generator) -> torch.Tensor:
        sel = [self._sample(a, g) for a in arts]
        emb = self._embed([a.ids[int(i)] for a, s in zip(arts, sel) for i in s])
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
