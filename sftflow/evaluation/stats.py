"""Summary statistics of one evaluation and the paired comparison of two.

The comparison pairs examples by id and keeps only those both models answered (no error): a
paired design removes the between-article variance that dominates ROUGE, so a small
improvement can be told from noise with a few dozen examples. Uncertainty comes from a
seeded paired bootstrap (percentile 95% CI of the mean difference) and significance from
the Wilcoxon signed-rank test, which does not assume normally distributed differences.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from sftflow.evaluation.results import ExampleResult
from sftflow.evaluation.rouge import METRICS

TIE_EPS = 1e-12
METRIC_LABELS = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L"}
_BOOT_CELLS = 4_000_000  # resampled cells per chunk: bounds memory to ~32 MB of indices


def counts(results: Sequence[ExampleResult]) -> dict[str, int]:
    """How many examples were scored, errored, blocked, or answered with empty text."""
    return {
        "total": len(results),
        "scored": sum(r.scored for r in results),
        "errors": sum(r.error is not None for r in results),
        "blocked": sum(r.blocked and r.error is None for r in results),
        "empty": sum(r.empty for r in results),
    }


def summarize(results: Sequence[ExampleResult]) -> dict[str, dict[str, float]]:
    """{metric: {mean, median, std, n}} over scored examples (std: sample std, 0 when n < 2).

    Blocked and empty answers are included (they scored 0); errored ones are not.
    """
    out: dict[str, dict[str, float]] = {}
    scored = [r for r in results if r.scored]
    for m in METRICS:
        x = np.array([r.scores[m] for r in scored], dtype=float)
        n = len(x)
        out[m] = {
            "mean": float(x.mean()) if n else math.nan,
            "median": float(np.median(x)) if n else math.nan,
            "std": float(x.std(ddof=1)) if n > 1 else 0.0,
            "n": n,
        }
    return out


# --------------------------------------------------------------------------- pairing


@dataclass
class Paired:
    ids: list[str]
    baseline: dict[str, np.ndarray]  # metric -> scores, aligned with ids
    tuned: dict[str, np.ndarray]
    excluded: dict[str, int]  # reason -> count


def pair(baseline: Sequence[ExampleResult], tuned: Sequence[ExampleResult]) -> Paired:
    """Align two evaluations by example id (baseline order); keep examples both scored."""
    b_by = {r.id: r for r in baseline}
    t_by = {r.id: r for r in tuned}
    reasons: Counter[str] = Counter()
    ids: list[str] = []
    order = list(b_by) + [i for i in t_by if i not in b_by]
    for i in order:
        b, t = b_by.get(i), t_by.get(i)
        if b is None:
            reasons["missing in baseline"] += 1
        elif t is None:
            reasons["missing in tuned"] += 1
        elif not b.scored and not t.scored:
            reasons["error in both"] += 1
        elif not b.scored:
            reasons["error in baseline"] += 1
        elif not t.scored:
            reasons["error in tuned"] += 1
        else:
            ids.append(i)
    return Paired(
        ids=ids,
        baseline={m: np.array([b_by[i].scores[m] for i in ids], dtype=float) for m in METRICS},
        tuned={m: np.array([t_by[i].scores[m] for i in ids], dtype=float) for m in METRICS},
        excluded=dict(sorted(reasons.items())),
    )


# --------------------------------------------------------------------------- tests


def bootstrap_means(samples: dict[str, np.ndarray], *, n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """`n_boot` bootstrap means of each array, all arrays resampled with the *same* indices
    (so paired arrays stay paired). Vectorised in chunks to bound memory."""
    arrays = list(samples.values())
    n = len(arrays[0]) if arrays else 0
    if n == 0:
        return {k: np.full(n_boot, np.nan) for k in samples}
    rng = np.random.default_rng(seed)
    out = {k: np.empty(n_boot) for k in samples}
    chunk = max(1, _BOOT_CELLS // n)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        for k, x in samples.items():
            out[k][start:stop] = x[idx].mean(axis=1)
    return out


def percentile_ci(boot: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    if np.isnan(boot).all():
        return (math.nan, math.nan)
    a = (1 - level) / 2
    lo, hi = np.percentile(boot, [100 * a, 100 * (1 - a)])
    return float(lo), float(hi)


def wilcoxon_p(diff: np.ndarray) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value (scipy defaults: zero differences dropped).

    None when fewer than two pairs exist (no test possible); 1.0 when every difference is
    zero (scipy refuses that case; there is no evidence of a difference).
    """
    from scipy.stats import wilcoxon

    if len(diff) < 2:
        return None
    if np.all(np.abs(diff) < TIE_EPS):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-sample / ties notices
        p = float(wilcoxon(diff).pvalue)
    return 1.0 if math.isnan(p) else p


# --------------------------------------------------------------------------- comparison


@dataclass
class MetricComparison:
    baseline_mean: float
    tuned_mean: float
    difference: float  # tuned - baseline, mean over paired examples
    ci_low: float  # paired bootstrap percentile 95% CI of `difference`
    ci_high: float
    n_paired: int
    n_excluded: int
    wins: int  # tuned > baseline
    ties: int
    losses: int
    p_value: float | None  # Wilcoxon signed-rank, two-sided
    baseline_ci: tuple[float, float] = (math.nan, math.nan)  # bootstrap 95% CI of each mean
    tuned_ci: tuple[float, float] = (math.nan, math.nan)


@dataclass
class Comparison:
    baseline_model: str
    tuned_model: str
    n_paired: int
    excluded: dict[str, int]
    metrics: dict[str, MetricComparison] = field(default_factory=dict)
    n_boot: int = 10000
    seed: int = 0

    @property
    def n_excluded(self) -> int:
        return sum(self.excluded.values())

    def to_json(self) -> dict[str, Any]:
        """The content of comparison.json (NaN written as null)."""
        return nan_to_none({
            "baseline_model": self.baseline_model,
            "tuned_model": self.tuned_model,
            "n_paired": self.n_paired,
            "n_excluded": self.n_excluded,
            "excluded": dict(self.excluded),
            "bootstrap": {"n_boot": self.n_boot, "seed": self.seed, "ci": "percentile 95%"},
            "metrics": {m: {**asdict(mc), "baseline_ci": list(mc.baseline_ci),
                            "tuned_ci": list(mc.tuned_ci)} for m, mc in self.metrics.items()},
        })

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Comparison:
        def num(v):
            return math.nan if v is None else v

        metrics = {}
        for m, d in data["metrics"].items():
            d = dict(d)
            for k in ("baseline_mean", "tuned_mean", "difference", "ci_low", "ci_high"):
                d[k] = num(d[k])
            d["baseline_ci"] = tuple(num(v) for v in d.get("baseline_ci", (None, None)))
            d["tuned_ci"] = tuple(num(v) for v in d.get("tuned_ci", (None, None)))
            metrics[m] = MetricComparison(**d)
        boot = data.get("bootstrap", {})
        return cls(data["baseline_model"], data["tuned_model"], data["n_paired"],
                   dict(data.get("excluded", {})), metrics, boot.get("n_boot", 10000), boot.get("seed", 0))


def nan_to_none(obj: Any) -> Any:
    """`obj` with every NaN replaced by None, recursively: JSON has no NaN."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [nan_to_none(v) for v in obj]
    return obj


def _model_of(results: Sequence[ExampleResult]) -> str:
    models = sorted({r.model for r in results})
    return models[0] if len(models) == 1 else ", ".join(models) or "?"


def compare(baseline: Sequence[ExampleResult], tuned: Sequence[ExampleResult], *,
            n_boot: int = 10000, seed: int = 0) -> Comparison:
    """Paired comparison per metric: means, mean difference with a paired bootstrap 95% CI,
    wins/ties/losses, Wilcoxon p; only examples both sides scored take part."""
    p = pair(baseline, tuned)
    n = len(p.ids)
    samples: dict[str, np.ndarray] = {}
    for m in METRICS:
        samples[f"d:{m}"] = p.tuned[m] - p.baseline[m]
        samples[f"b:{m}"] = p.baseline[m]
        samples[f"t:{m}"] = p.tuned[m]
    boot = bootstrap_means(samples, n_boot=n_boot, seed=seed)
    cmp = Comparison(_model_of(baseline), _model_of(tuned), n, p.excluded, n_boot=n_boot, seed=seed)
    for m in METRICS:
        d = samples[f"d:{m}"]
        lo, hi = percentile_ci(boot[f"d:{m}"])
        cmp.metrics[m] = MetricComparison(
            baseline_mean=float(p.baseline[m].mean()) if n else math.nan,
            tuned_mean=float(p.tuned[m].mean()) if n else math.nan,
            difference=float(d.mean()) if n else math.nan,
            ci_low=lo,
            ci_high=hi,
            n_paired=n,
            n_excluded=cmp.n_excluded,
            wins=int(np.sum(d >= TIE_EPS)),
            ties=int(np.sum(np.abs(d) < TIE_EPS)),
            losses=int(np.sum(d <= -TIE_EPS)),
            p_value=wilcoxon_p(d),
            baseline_ci=percentile_ci(boot[f"b:{m}"]),
            tuned_ci=percentile_ci(boot[f"t:{m}"]),
        )
    return cmp


def verdict(mc: MetricComparison, alpha: float = 0.05) -> str:
    """"better", "worse" or "no significant difference": significant needs p < alpha *and*
    a bootstrap CI that excludes 0 (both tests agree)."""
    if mc.p_value is None or math.isnan(mc.ci_low):
        return "no significant difference"
    if mc.p_value < alpha and mc.ci_low > 0:
        return "better"
    if mc.p_value < alpha and mc.ci_high < 0:
        return "worse"
    return "no significant difference"
