"""ROUGE-1/2/L F-measures with Porter stemming, as the codelab computes them (rouge-score).

Two implementations give the same numbers: `rouge-score` (Google's Python reference) and
`rouge-score-rs` (a Rust drop-in with the same API, ~50x faster). tests/test_rouge.py checks
on the project's sample data and on awkward strings that both return bit-identical floats;
the Rust one is used when importable. ``SFTFLOW_ROUGE_IMPL=python`` forces the reference
(``rust`` forces the drop-in and fails if it is missing).
"""

from __future__ import annotations

import os
from functools import lru_cache

METRICS = ("rouge1", "rouge2", "rougeL")
IMPL_ENV = "SFTFLOW_ROUGE_IMPL"
IMPLEMENTATIONS = ("rust", "python")


def implementation() -> str:
    """The implementation `score_pair` uses now: "rust" or "python"."""
    wanted = os.environ.get(IMPL_ENV, "").strip().lower()
    if wanted and wanted not in IMPLEMENTATIONS:
        raise ValueError(f"{IMPL_ENV}={wanted!r}: allowed values are {', '.join(IMPLEMENTATIONS)}")
    if wanted:
        return wanted
    return "rust" if _rust_available() else "python"


@lru_cache(maxsize=1)
def _rust_available() -> bool:
    try:
        import rouge_score_rs  # noqa: F401
    except ImportError:
        return False
    return True


@lru_cache(maxsize=2)
def _scorer(impl: str):
    if impl == "rust":
        from rouge_score_rs import RougeScorer
    else:
        from rouge_score.rouge_scorer import RougeScorer
    return RougeScorer(list(METRICS), use_stemmer=True)


def score_pair(reference: str, prediction: str, *, impl: str | None = None) -> dict[str, float]:
    """F-measure per metric, in [0, 1]. `impl` picks an implementation (default: `implementation()`)."""
    scores = _scorer(impl or implementation()).score(reference, prediction)
    return {m: float(scores[m].fmeasure) for m in METRICS}
