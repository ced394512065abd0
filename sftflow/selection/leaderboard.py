"""The sweep's leaderboard: every tuned configuration (and checkpoint) against the base, paired.

Each entry carries its hyperparameters, job, tuned model, cost estimate, ROUGE means and the
paired difference from the base model with its bootstrap 95% CI (sftflow.evaluation.stats.compare). `best`
is the highest ROUGE-L among entries whose CI vs base lies above 0 (a significant win); equal
ROUGE-L → the cheaper one. When none qualifies, `best` is null and `best_reason` says why: a
sweep must not crown a configuration it cannot tell from the base model.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from sftflow.infra import storage
from sftflow.evaluation.stats import Comparison, nan_to_none

RANK_METRIC = "rougeL"
TIE_EPS = 1e-9  # ROUGE-L means closer than this are a tie (then the cheaper entry wins)


@dataclass(frozen=True)
class Entry:
    """One evaluated model of the sweep: a configuration's tuned model, or one of its checkpoints."""

    label: str  # result label, e.g. "e2-a8-lr1" or "e2-a8-lr1-ckpt1"
    hyperparameters: dict[str, Any]
    job: str | None
    key: str | None
    tuned_model: str | None
    endpoint: str
    cost_usd: float | None
    means: dict[str, float]  # metric -> mean over paired examples
    vs_base: dict[str, dict[str, Any]]  # metric -> {difference, ci_low, ci_high, p_value, n_paired}
    results_uri: str | None = None
    checkpoint: dict[str, Any] | None = None  # {checkpoint_id, epoch, step} for a checkpoint entry
    errors: list[str] = field(default_factory=list)
    judge: dict[str, Any] | None = None  # the pairwise judge vs base (sftflow.judging.summary.summarize), if judged

    @property
    def significant(self) -> bool:
        """The paired CI of (this − base) on ROUGE-L lies entirely above 0."""
        low = self.vs_base.get(RANK_METRIC, {}).get("ci_low")
        return low is not None and not math.isnan(low) and low > 0

    @property
    def score(self) -> float:
        v = self.means.get(RANK_METRIC)
        return -math.inf if v is None or math.isnan(v) else v

    def to_dict(self) -> dict[str, Any]:
        return nan_to_none(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Entry:
        d = dict(d)
        d["means"] = {k: math.nan if v is None else v for k, v in d["means"].items()}
        d["vs_base"] = {m: {k: math.nan if v is None and k != "p_value" else v for k, v in x.items()}
                        for m, x in d["vs_base"].items()}
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def entry_from_comparison(*, label: str, hyperparameters: dict[str, Any], job: str | None, key: str | None,
                          tuned_model: str | None, endpoint: str, cost_usd: float | None, comparison: Comparison,
                          results_uri: str | None = None, checkpoint: dict[str, Any] | None = None,
                          errors: list[str] | None = None, judge: dict[str, Any] | None = None) -> Entry:
    """An entry from the paired comparison base → this model (means over the examples both scored)."""
    means = {m: mc.tuned_mean for m, mc in comparison.metrics.items()}
    vs = {m: {"difference": mc.difference, "ci_low": mc.ci_low, "ci_high": mc.ci_high, "p_value": mc.p_value,
              "n_paired": mc.n_paired} for m, mc in comparison.metrics.items()}
    return Entry(label=label, hyperparameters=dict(hyperparameters), job=job, key=key, tuned_model=tuned_model,
                 endpoint=endpoint, cost_usd=cost_usd, means=means, vs_base=vs, results_uri=results_uri,
                 checkpoint=checkpoint, errors=list(errors or []), judge=judge)


def judge_score(e: Entry) -> float:
    """The entry's judge win rate vs base (-inf when it was not judged)."""
    v = (e.judge or {}).get("win_rate")
    return -math.inf if v is None or math.isnan(v) else v


def rank(entries: list[Entry], metric: str = RANK_METRIC) -> list[Entry]:
    """Highest ROUGE-L (metric 'judge': highest judge win rate) first; ties (within TIE_EPS) → lower cost, then
    label (a stable order)."""
    def key(e: Entry):
        cost = math.inf if e.cost_usd is None else e.cost_usd
        score = judge_score(e) if metric == "judge" else e.score
        return (-round(score / TIE_EPS) if math.isfinite(score) else math.inf, cost, e.label)

    return sorted(entries, key=key)


def choose_best(entries: list[Entry], metric: str = RANK_METRIC) -> tuple[Entry | None, str]:
    """(best, reason): the top-ranked significant win over the base, or None and why there is none. Metric
    'judge': significant = the lower bound of the judge's win-rate 95% CI is above 50 % (a tie within the CI is
    no win)."""
    if not entries:
        return None, "no configuration was evaluated"
    if metric == "judge":
        return _choose_by_judge(entries)
    ranked = rank(entries)
    for e in ranked:
        if e.significant:
            return e, (f"{e.label}: highest ROUGE-L ({points(e.score)}) among the configurations whose 95% CI "
                       f"vs base lies above 0 [{signed_points(e.vs_base[RANK_METRIC]['ci_low'])}, "
                       f"{signed_points(e.vs_base[RANK_METRIC]['ci_high'])}]")
    top = ranked[0]
    d = top.vs_base.get(RANK_METRIC, {})
    return None, (f"no configuration beats the base model significantly on ROUGE-L: the 95% CI of every "
                  f"difference reaches 0 or below (the top, {top.label}, "
                  f"{signed_points(d.get('difference'))} [{signed_points(d.get('ci_low'))}, {signed_points(d.get('ci_high'))}])")


def _choose_by_judge(entries: list[Entry]) -> tuple[Entry | None, str]:
    def pct(x: float | None) -> str:
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"

    ranked = rank(entries, "judge")
    for e in ranked:
        j = e.judge or {}
        if j.get("ci_low") is not None and j.get("judged", 0) >= 2 and j["ci_low"] > 0.5:
            return e, (f"{e.label}: highest judge win rate vs base ({pct(j['win_rate'])}) among the configurations "
                       f"whose 95% CI lies above 50% [{pct(j['ci_low'])}, {pct(j['ci_high'])}]")
    top = (ranked[0].judge or {}) if ranked else {}
    return None, (f"no configuration beats the base model by the judge: every win rate's 95% CI reaches 50% or "
                  f"below (the top, {ranked[0].label}, {pct(top.get('win_rate'))} [{pct(top.get('ci_low'))}, "
                  f"{pct(top.get('ci_high'))}])")


RULES = {"rougeL": "best = highest ROUGE-L whose paired 95% CI vs base lies above 0; ties -> lower cost",
         "judge": "best = highest judge win rate vs base whose 95% CI lies above 50%; ties -> lower cost"}


def build(entries: list[Entry], *, base: dict[str, Any], run_name: str, examples: int | None = None,
          grid: dict[str, Any] | None = None, metric: str = RANK_METRIC) -> dict[str, Any]:
    """The leaderboard document: ranked entries, the base model's means, and `best` (or null + reason)."""
    best, reason = choose_best(entries, metric)
    return nan_to_none({
        "run_name": run_name,
        "rank_metric": metric,
        "rule": RULES[metric],
        "examples": examples,
        "grid": grid or {},
        "base": base,
        "entries": [e.to_dict() for e in rank(entries, metric)],
        "best": best.label if best else None,
        "best_entry": best.to_dict() if best else None,
        "best_reason": reason,
    })


def write(uri: str, board: dict[str, Any]) -> str:
    """Write atomically (storage writes a temp file and renames / uploads in one shot)."""
    return storage.write_text(uri, json.dumps(board, indent=2, sort_keys=False), "application/json")


def read(uri: str) -> dict[str, Any]:
    return json.loads(storage.read_text(uri))


def entries_of(board: dict[str, Any]) -> list[Entry]:
    return [Entry.from_dict(e) for e in board["entries"]]


def points(x: float | None) -> str:
    """ROUGE as points (×100), one decimal; "-" when missing."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def signed_points(x: float | None) -> str:
    """A difference in ROUGE points, signed; "n/a" when missing."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:+.1f}"
