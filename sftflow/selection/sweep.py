"""Step: a sweep's leaderboard (every model paired with the base on the same examples) and the sweep's report —
each one domain function returning a record (sftflow.records); its best challenges the champion through
sftflow.selection.challenge, as the pipeline's tuned model does."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sftflow.backends.base import JobState, Tuner, TuningSpec
from sftflow.infra import layout, storage
from sftflow.selection import leaderboard
from sftflow.evaluation import plots, stats
from sftflow.records import ChampionDecision, Evaluation, SweepLeaderboard
from sftflow.selection.sweep_report import sweep_markdown
from sftflow.evaluation.results import read_results


log = logging.getLogger(__name__)


def limit_name(backend: str, project: str | None, region: str) -> str:
    """One limit on a grid's jobs per tuning quota: backend + project + region (Prefect limit names: no '/'
    or '%')."""
    where = f"{project}-{region}" if backend == "vertex" else "local"
    return re.sub(r"[^A-Za-z0-9_.-]", "-", f"sftflow-tuning-{backend}-{where}")


def committed_labels(tuner: Tuner, storage_root: str, specs: Mapping[str, TuningSpec]) -> list[str]:
    """Labels whose intent already has a finished record or a live job: already paid, not capped again."""
    return [label for label, spec in specs.items()
            if storage.exists(layout.tuning_record_uri(storage_root, spec.key))
            or any(j.state.alive for j in tuner.find(spec.key))]


def cancel_unfinished(tuner: Tuner, specs: Iterable[TuningSpec]) -> list[str]:
    """Cancel the grid's pending or running jobs (the sweep was interrupted; cancel_job_on_interrupt). Returns
    the jobs it asked to cancel; an error is logged, not raised (the interrupt must still propagate)."""
    asked = []
    for spec in specs:
        try:
            for job in tuner.find(spec.key):
                if job.state in (JobState.PENDING, JobState.RUNNING):
                    log.warning("interrupted: cancelling tuning job %s (cancel_job_on_interrupt=true)", job.name)
                    tuner.cancel(job.name)
                    asked.append(job.name)
        except Exception as exc:  # noqa: BLE001 - the interrupt must still propagate
            log.error("cancelling the job for %s failed (%s): it may still be running and billing; cancel it "
                      "yourself or rerun the sweep to attach to it", spec.key, exc)
    return asked


#: (base results URI, model results URI, model label) -> the judge's summary of that model vs the base.
JudgeFn = Callable[[str, str, str], dict[str, Any]]


def build_and_save_leaderboard(run_root: str, run_name: str, base: Evaluation, models: list[dict[str, Any]], *,
                               grid: dict[str, Any], samples: int | None, seed: int = 0, metric: str = "rougeL",
                               judge: JudgeFn | None = None) -> SweepLeaderboard:
    """Compare every model with the base (paired; with `judge`, also judged pairwise), rank by `metric`, write
    leaderboard.json (atomically) and its plot."""
    if metric == "judge" and judge is None:
        raise ValueError("promotion_metric: 'judge' ranks a sweep by the pairwise judge, but judge is 'none'")
    out_dir = layout.sweep_dir(run_root)
    base_results = read_results(base.results_uri)
    entries = []
    for m in models:
        cmp = stats.compare(base_results, read_results(m["results_uri"]), seed=seed)
        entries.append(leaderboard.entry_from_comparison(
            label=m["label"], hyperparameters=m["hyperparameters"], job=m["job"], key=m["key"],
            tuned_model=m["tuned_model"], endpoint=m["endpoint"], cost_usd=m["cost_usd"], comparison=cmp,
            results_uri=m["results_uri"], checkpoint=m.get("checkpoint"), errors=list(m.get("errors") or []),
            judge=judge(base.results_uri, m["results_uri"], m["label"]) if judge else None))
    base_info = {"model": base.model, "results_uri": base.results_uri,
                 "means": {k: v["mean"] for k, v in base.summary.items()}}
    board = leaderboard.build(entries, base=base_info, run_name=run_name, examples=samples, grid=grid, metric=metric)
    uri = leaderboard.write(storage.join(out_dir, "leaderboard.json"), board)
    plot_uri = storage.write_bytes(storage.join(out_dir, "leaderboard.png"), plots.plot_leaderboard(board),
                                   "image/png")
    return SweepLeaderboard(leaderboard_uri=uri, plot_uri=plot_uri, board=board)


def write_sweep_report(run_root: str, board: dict[str, Any], plot_uri: str, decision: ChampionDecision | None) -> str:
    """runs/<run>/sweep/report.md: the leaderboard and the champion decision."""
    md = sweep_markdown(board, plot_uri, decision.to_json() if decision else None)
    return storage.write_text(storage.join(layout.sweep_dir(run_root), "report.md"), md, "text/markdown")
