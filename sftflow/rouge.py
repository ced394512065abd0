"""ROUGE-1/2/L F-measures with Porter stemming, as the codelab computes them (rouge-score)."""

from __future__ import annotations

from functools import lru_cache

METRICS = ("rouge1", "rouge2", "rougeL")


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(METRICS), use_stemmer=True)


def score_pair(reference: str, prediction: str) -> dict[str, float]:
    """F-measure per metric, in [0, 1]."""
    scores = _scorer().score(reference, prediction)
    return {m: scores[m].fmeasure for m in METRICS}
