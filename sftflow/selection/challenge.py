"""Step: a candidate challenges the champion of its storage root (sftflow.selection.champion keeps the record and the rule).

The candidate is a leaderboard entry (sftflow.selection.leaderboard): a sweep's best, or the pipeline's tuned model, which
first has to beat the base model significantly — the rule a sweep's best already passed
(`leaderboard.choose_best`). The champion is evaluated on the candidate's examples through `evaluate` (the
caller's cached evaluation), the two are compared paired, and the decision is recorded either way. Nothing is
decided twice: when the candidate is the champion, or a decision against the same champion is already recorded,
that is returned before any model call, so a rerun appends nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sftflow.selection import champion, leaderboard
from sftflow.evaluation import stats
from sftflow.backends.base import JobState, JobStatus, Tuner
from sftflow.errors import SftflowError
from sftflow.records import ChampionDecision, Evaluation, TunedModel
from sftflow.evaluation.results import read_results
from sftflow.selection.grid import GridPoint

log = logging.getLogger(__name__)

#: The result label of the champion's evaluation in the challenger's run.
CHAMPION_LABEL = "champion"
RETRIES = 3  # comparisons against a champion that another process keeps replacing
_MODEL_FIELDS = ("label", "job", "key", "tuned_model", "endpoint", "hyperparameters", "results_uri", "checkpoint")

#: (model or endpoint, result label) -> that model's evaluation on the candidate's examples.
EvaluateFn = Callable[[str, str], Evaluation]
#: (champion's results URI, candidate's results URI) -> the pairwise judge's summary (promotion_metric 'judge').
JudgeFn = Callable[[str, str], dict[str, Any]]


class ChampionGone(SftflowError, RuntimeError):
    """The champion's endpoint or model no longer exists, so nothing can be compared with it."""


def pipeline_candidate(run_name: str, hyperparameters: dict[str, Any], tuned_model: TunedModel, tuned: Evaluation,
                       comparison: dict[str, Any], judged: dict[str, Any] | None = None, metric: str = "rougeL",
                       ) -> tuple[dict[str, Any] | None, str]:
    """(the pipeline's tuned model as a leaderboard entry labelled `<run>/<hyperparameters>`, e.g. quick/e1-a4-lr1,
    why): None when it does not beat the base model significantly on `metric` (ROUGE-L, or the judge's win rate
    `judged`), with the reason."""
    entry = leaderboard.entry_from_comparison(
        label=f"{run_name}/{GridPoint(**hyperparameters).label}", hyperparameters=hyperparameters,
        job=tuned_model.job, key=tuned_model.key, tuned_model=tuned_model.tuned_model, endpoint=tuned_model.endpoint,
        cost_usd=(tuned_model.cost_estimate or {}).get("total_usd"), comparison=stats.Comparison.from_json(comparison),
        results_uri=tuned.results_uri, judge=judged)
    best, reason = leaderboard.choose_best([entry], metric)
    return (best.to_dict() if best else None), reason


def challenge(storage_root: str, run_name: str, candidate: dict[str, Any] | None, why_none: str, *,
              evaluate: EvaluateFn, tuner: Tuner, margin: float = 0.0, seed: int = 0,
              judge: JudgeFn | None = None) -> ChampionDecision:
    """`candidate` against the current champion: promoted only on a significant ROUGE-L win (champion.decide),
    recorded either way, marked where the backend keeps a mark (Vertex: the registry alias, and a winning
    checkpoint as the default). ChampionGone when the champion's endpoint or model was deleted."""
    if candidate is None:
        return ChampionDecision(promoted=False, reason=f"no candidate: {why_none}")
    for _ in range(RETRIES):
        entries = champion.history(storage_root)
        current = champion.current(storage_root, entries)
        against = current["seq"] if current else None
        if current is not None and current["model"].get("endpoint") == candidate["endpoint"]:
            return ChampionDecision(promoted=False, reason=f"{candidate['label']} is already the champion "
                                                           f"(#{against})", seq=against)
        done = champion.previous_decision(entries, candidate["endpoint"], against, margin)
        if done is not None:
            return ChampionDecision(promoted=False, reason=done["reason"], seq=done["seq"])
        champion_eval = None
        if current is not None:
            _check_exists(tuner, current)
            champion_eval = evaluate(current["model"]["endpoint"], CHAMPION_LABEL)
        try:
            return _decide(storage_root, run_name, candidate, current, champion_eval, tuner, margin, seed, judge)
        except champion.ChampionChanged as exc:
            log.warning("%s", exc)
    raise champion.ChampionChanged(f"the champion kept changing during {RETRIES} comparisons; rerun")


def _status(model: dict[str, Any]) -> JobStatus:
    return JobStatus(name=model.get("job") or "", state=JobState.SUCCEEDED, key=model.get("key"),
                     tuned_model=model.get("tuned_model"), endpoint=model.get("endpoint"))


def _check_exists(tuner: Tuner, entry: dict[str, Any]) -> None:
    m = entry["model"]
    if not tuner.outputs_exist(_status(m)):
        raise ChampionGone(
            f"champion #{entry['seq']} {champion.name_of(entry)} (run {m.get('run_name')}) no longer exists: its "
            f"endpoint {m.get('endpoint')} or model {m.get('tuned_model')} was deleted; retire it with `sftflow "
            "champion --retire` (the next challenger then becomes the first champion), or restore it, and rerun")


def _decide(storage_root: str, run_name: str, candidate: dict[str, Any], current: dict[str, Any] | None,
            champion_eval: Evaluation | None, tuner: Tuner, margin: float, seed: int,
            judge: JudgeFn | None = None) -> ChampionDecision:
    model = {k: candidate.get(k) for k in _MODEL_FIELDS} | {"run_name": run_name}
    vs = judged = None
    if current is not None and champion_eval is not None:
        vs = stats.compare(read_results(champion_eval.results_uri), read_results(candidate["results_uri"]),
                           seed=seed).metrics["rougeL"]
        if judge is not None:
            judged = judge(champion_eval.results_uri, candidate["results_uri"])
    if judge is not None:  # promotion_metric 'judge'
        decision = champion.decide_by_judge(candidate["label"], current, judged, margin=margin)
    else:
        decision = champion.decide(candidate["label"], current, vs, margin=margin)
    comparison = None if vs is None else {"difference": vs.difference, "ci_low": vs.ci_low, "ci_high": vs.ci_high,
                                          "n_paired": vs.n_paired, "p_value": vs.p_value}
    if judged is not None:
        comparison["judge"] = {k: judged.get(k) for k in ("win_rate", "ci_low", "ci_high", "judged",
                                                          "order_disagreement_rate")}
    alias, checkpoint = None, (candidate.get("checkpoint") or {}).get("checkpoint_id")
    if decision.promote:  # the registry first (idempotent): a crash before the record below means a rerun redoes both
        alias = tuner.mark_champion(_status(model), checkpoint_id=checkpoint,
                                    previous=_status(current["model"]) if current else None)
    try:
        entry = champion.append(storage_root, event="promoted" if decision.promote else "kept", model=model,
                                reason=decision.reason, against=current["seq"] if current else None,
                                comparison=comparison, margin=margin)
    except champion.ChampionChanged:
        now = champion.current(storage_root)
        if decision.promote and now is not None:  # another process's champion won the race: the mark is theirs
            tuner.mark_champion(_status(now["model"]), previous=_status(model))
        raise
    return ChampionDecision(promoted=decision.promote, reason=decision.reason, seq=entry["seq"], alias=alias,
                            checkpoint=checkpoint if decision.promote else None)
