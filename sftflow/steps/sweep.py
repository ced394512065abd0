"""Step: a sweep's leaderboard (every model paired with the base on the same examples), the champion
challenge, and the sweep's report — each one domain function returning a record (sftflow.records)."""

from __future__ import annotations

from typing import Any

from sftflow import champion, layout, leaderboard, plots, stats, storage
from sftflow.backends.base import JobState, JobStatus, Tuner
from sftflow.records import ChampionDecision, Evaluation, SweepLeaderboard
from sftflow.reporting.sweep import sweep_markdown
from sftflow.results import results_from_jsonl


def _results(uri: str):
    return results_from_jsonl(storage.read_text(uri), uri)


def build_and_save_leaderboard(run_root: str, run_name: str, base: Evaluation, models: list[dict[str, Any]], *,
                               grid: dict[str, Any], samples: int | None, seed: int = 0) -> SweepLeaderboard:
    """Compare every model with the base (paired), rank, write leaderboard.json (atomically) and its plot."""
    out_dir = layout.sweep_dir(run_root)
    base_results = _results(base.results_uri)
    entries = []
    for m in models:
        cmp = stats.compare(base_results, _results(m["results_uri"]), seed=seed)
        entries.append(leaderboard.entry_from_comparison(
            label=m["label"], hyperparameters=m["hyperparameters"], job=m["job"], key=m["key"],
            tuned_model=m["tuned_model"], endpoint=m["endpoint"], cost_usd=m["cost_usd"], comparison=cmp,
            results_uri=m["results_uri"], checkpoint=m.get("checkpoint"), errors=list(m.get("errors") or [])))
    base_info = {"model": base.model, "results_uri": base.results_uri,
                 "means": {k: v["mean"] for k, v in base.summary.items()}}
    board = leaderboard.build(entries, base=base_info, run_name=run_name, examples=samples, grid=grid)
    uri = leaderboard.write(storage.join(out_dir, "leaderboard.json"), board)
    plot_uri = storage.write_bytes(storage.join(out_dir, "leaderboard.png"), plots.plot_leaderboard(board),
                                   "image/png")
    return SweepLeaderboard(leaderboard_uri=uri, plot_uri=plot_uri, board=board)


def challenge(storage_root: str, run_name: str, board: dict[str, Any], *, current: dict[str, Any] | None,
              champion_eval: Evaluation | None, tuner: Tuner, margin: float = 0.0, seed: int = 0) -> ChampionDecision:
    """The sweep's best against `current` (the champion read before `champion_eval`, its evaluation on the
    same examples): promote only on a significant ROUGE-L win, record the decision either way, and mark the
    new champion where the backend can (Vertex: the registry alias). ChampionChanged: compare again."""
    best = board["best_entry"]
    model = {k: best.get(k) for k in ("label", "job", "key", "tuned_model", "endpoint", "hyperparameters",
                                      "results_uri", "checkpoint")}
    model["run_name"] = run_name
    vs = None
    if current is not None and champion_eval is not None:
        vs = stats.compare(_results(champion_eval.results_uri), _results(best["results_uri"]),
                           seed=seed).metrics["rougeL"]
    decision = champion.decide(best["label"], current, vs, margin=margin)
    comparison = None if vs is None else {"difference": vs.difference, "ci_low": vs.ci_low, "ci_high": vs.ci_high,
                                          "n_paired": vs.n_paired, "p_value": vs.p_value}
    entry = champion.append(storage_root, event="promoted" if decision.promote else "kept", model=model,
                            reason=decision.reason, against=current["seq"] if current else None,
                            comparison=comparison, margin=margin)
    alias = None
    if decision.promote:  # a checkpoint champion: the same registry model, served by the checkpoint's endpoint
        alias = tuner.mark_champion(JobStatus(name=best["job"], state=JobState.SUCCEEDED, key=best["key"],
                                              tuned_model=best["tuned_model"], endpoint=best["endpoint"]))
    return ChampionDecision(promoted=decision.promote, reason=decision.reason, seq=entry["seq"], alias=alias)


def write_sweep_report(run_root: str, board: dict[str, Any], plot_uri: str, decision: ChampionDecision | None) -> str:
    """runs/<run>/sweep/report.md: the leaderboard and the champion decision."""
    md = sweep_markdown(board, plot_uri, decision.to_json() if decision else None)
    return storage.write_text(storage.join(layout.sweep_dir(run_root), "report.md"), md, "text/markdown")
