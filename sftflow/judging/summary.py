"""What judged pairs add up to: win/tie/loss, the win rate with a bootstrap 95% CI, how often the two orders
disagreed, how often the judge and ROUGE-L pick the same side, and the examples where they disagree most.

Win rate = (wins + ties / 2) / pairs: 50 % means "no better, no worse", so the champion rule with
`promotion_metric: judge` is "the CI's lower bound is above 50 % + promotion_margin". The CI is the same
seeded percentile bootstrap as the ROUGE comparison's (sftflow.evaluation.stats).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from sftflow.evaluation.stats import TIE_EPS, bootstrap_means, nan_to_none, percentile_ci
from sftflow.judging.pairs import JudgedPair

_SCORE = {"candidate": 1.0, "tie": 0.5, "baseline": 0.0}
_SIGN = {"candidate": 1, "tie": 0, "baseline": -1}
WORST = 3  # examples shown where the judge and ROUGE-L disagree most


def rouge_side(diff: float) -> str:
    """The side ROUGE-L prefers by a difference candidate − baseline."""
    return "candidate" if diff >= TIE_EPS else "baseline" if diff <= -TIE_EPS else "tie"


def summarize(judged: Sequence[JudgedPair], *, n_boot: int = 10000, seed: int = 0) -> dict[str, Any]:
    """The judging's numbers (JSON-ready; NaN as None) over the pairs judged without error."""
    ok = [p for p in judged if p.error is None and p.verdict in _SCORE]
    n = len(ok)
    scores = np.array([_SCORE[p.verdict] for p in ok], dtype=float)
    counts = {side: sum(p.verdict == side for p in ok) for side in ("candidate", "tie", "baseline")}
    lo, hi = percentile_ci(bootstrap_means({"s": scores}, n_boot=n_boot, seed=seed)["s"])
    agree = [p.verdict == rouge_side(p.rouge_l_difference) for p in ok]
    win_rate = float(scores.mean()) if n else math.nan
    rouge_mean = float(np.mean([p.rouge_l_difference for p in ok])) if n else math.nan
    return nan_to_none({
        "pairs": len(judged), "judged": n, "errors": len(judged) - n,
        "wins": counts["candidate"], "ties": counts["tie"], "losses": counts["baseline"],
        "win_rate": win_rate, "ci_low": lo, "ci_high": hi, "n_boot": n_boot, "seed": seed,
        "orders_disagree": sum(p.orders_disagree for p in ok),
        "order_disagreement_rate": float(np.mean([p.orders_disagree for p in ok])) if n else math.nan,
        "rouge_agreement_rate": float(np.mean(agree)) if n else math.nan,
        "rouge_l_difference": rouge_mean,
        "direction_agrees_with_rouge": direction(win_rate) == rouge_side(rouge_mean) if n else None,
        "requests": sum(p.requests for p in judged),
        "input_tokens": sum(p.input_tokens for p in judged),
        "output_tokens": sum(p.output_tokens for p in judged),
    })


def direction(win_rate: float) -> str:
    """The side a win rate leans to (exactly 50 %: neither)."""
    return "candidate" if win_rate > 0.5 else "baseline" if win_rate < 0.5 else "tie"


def disagreement(p: JudgedPair) -> float:
    """How strongly the judge and ROUGE-L disagree on a pair: ROUGE-L's difference against the judge's side
    (a judged tie counts half the difference), 0 when they agree."""
    d = p.rouge_l_difference
    sign = _SIGN.get(p.verdict or "tie", 0)
    if sign == 0:
        return abs(d) / 2 if rouge_side(d) != "tie" else 0.0
    return max(0.0, -sign * d)


def most_disagreeing(judged: Sequence[JudgedPair], k: int = WORST) -> list[JudgedPair]:
    """The `k` pairs where the judge and ROUGE-L disagree most (none where they agree)."""
    ranked = sorted((p for p in judged if p.error is None and disagreement(p) > 0), key=lambda p: (-disagreement(p), p.id))
    return ranked[:k]


def promotes(summary: dict[str, Any], margin: float) -> bool:
    """The judge's promotion rule: the win rate's CI lower bound above 50 % + margin."""
    lo = summary.get("ci_low")
    return lo is not None and summary.get("judged", 0) >= 2 and lo > 0.5 + margin


def verdict_line(summary: dict[str, Any], label: str) -> str:
    """One line: `judge (LABEL): candidate wins 31/50, ties 12, loses 7; win rate 74.0% [95% CI 66.0, 82.0]`."""
    if not summary.get("judged"):
        return f"judge ({label}): no pair judged"
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}"  # noqa: E731
    return (f"judge ({label}): tuned wins {summary['wins']}/{summary['judged']}, ties {summary['ties']}, loses "
            f"{summary['losses']}; win rate {pct(summary['win_rate'])}% [95% CI {pct(summary['ci_low'])}, "
            f"{pct(summary['ci_high'])}]; orders disagreed on {pct(summary['order_disagreement_rate'])}%; "
            f"agrees with ROUGE-L on {pct(summary['rouge_agreement_rate'])}% of pairs")
