"""Sweep tasks: one grid point's tuning job under a concurrency limit, the leaderboard, the champion.

The limit: with a Prefect server (PREFECT_API_URL) a global concurrency limit named after the
backend and project, so every sweep using that server shares the tuning quota; without one (the
ephemeral API lives and dies with this process) an in-process semaphore. Prefect's `concurrency()`
only warns, and does not throttle, on a limit that was never created, so the limit is created first
(https://docs.prefect.io/v3/develop/global-concurrency-limits).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from sftflow import champion, layout, leaderboard, plots, stats, storage
from sftflow.backends import make_tuner
from sftflow.backends.base import JobState, JobStatus, TuningSpec
from sftflow.config import Settings
from sftflow.results import results_from_jsonl
from tasks.tuning import await_tuning_job, read_tuning_record, record_tuned_model, submit_tuning_job

_semaphores: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_semaphores_lock = threading.Lock()


def limit_name(s: Settings) -> str:
    """One limit per tuning quota: backend + project + region (Prefect limit names: no '/' or '%')."""
    where = f"{s.project}-{s.region}" if s.backend == "vertex" else "local"
    return re.sub(r"[^A-Za-z0-9_.-]", "-", f"sftflow-tuning-{s.backend}-{where}")


def _server_api() -> str | None:
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


@contextmanager
def tuning_slot(name: str, limit: int) -> Iterator[str]:
    """Hold one of `limit` slots while a job of the grid is submitted and runs; yields the kind of limit."""
    if _server_api():
        from prefect.concurrency.sync import concurrency

        _ensure_limit(name, limit)
        with concurrency(name, occupy=1, strict=True):
            yield "prefect-global-concurrency-limit"
        return
    with _semaphores_lock:
        sem = _semaphores.setdefault((name, limit), threading.BoundedSemaphore(limit))
    with sem:
        yield "in-process"


def _ensure_limit(name: str, limit: int) -> None:
    """Create the global limit or set its size. Prefect's upsert is not atomic: the grid's tasks (and other
    processes) race to create it, so one thread per process does it and a lost create race is retried."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectAlreadyExists

    with _semaphores_lock, get_client(sync_client=True) as client:
        try:
            client.upsert_global_concurrency_limit_by_name(name, limit)
        except ObjectAlreadyExists:  # another process created it between the read and the create
            client.upsert_global_concurrency_limit_by_name(name, limit)


@task(name="committed-configurations")
def committed_configurations(settings: Settings, specs: dict[str, TuningSpec]) -> list[str]:
    """Labels whose intent already has a finished record or a live job: already paid, not capped again."""
    tuner = make_tuner(settings)
    out = []
    for label, spec in specs.items():
        if storage.exists(layout.tuning_record_uri(settings.storage_root, spec.key)) or any(
                j.state.alive for j in tuner.find(spec.key)):
            out.append(label)
    return out


def cancel_grid_jobs(settings: Settings, specs: list[TuningSpec]) -> list[str]:
    """Cancel the grid's unfinished jobs (the flow was interrupted; cancel_job_on_interrupt). Not a task:
    it runs while the flow is torn down. Returns the jobs it asked to cancel; errors are logged, not raised."""
    log = get_run_logger()
    tuner, asked = make_tuner(settings), []
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


@task(name="tune-configuration", task_run_name="tune-{label}")
def tune_configuration(settings: Settings, label: str, spec: TuningSpec, estimate: dict, max_parallel: int) -> dict:
    """One grid point: its recorded result, else (holding a slot) attach to or submit its job and await it."""
    record = read_tuning_record(settings, spec.key)
    if record is None:
        with tuning_slot(limit_name(settings), max_parallel) as kind:
            get_run_logger().info("%s: holding a tuning slot (%s limit of %d)", label, kind, max_parallel)
            job = submit_tuning_job(settings, spec, estimate)
            record = await_tuning_job(settings, job["name"])
        record_tuned_model(settings, spec.key, record, spec)
    return {"label": label, "job": record["name"], "key": spec.key, "tuned_model": record["tuned_model"],
            "endpoint": record["endpoint"], "checkpoints": record.get("checkpoints") or [],
            "cost_usd": estimate.get("total_usd")}


def _results(uri: str):
    return results_from_jsonl(storage.read_text(uri), uri)


@task(name="build-leaderboard")
def build_leaderboard(settings: Settings, base: dict, models: list[dict], grid: dict) -> dict:
    """Pair every model with the base on the same examples, rank, write leaderboard.json + plot + artifacts."""
    out_dir = layout.sweep_dir(settings.run_root)
    base_results = _results(base["results_uri"])
    entries = []
    for m in models:
        cmp = stats.compare(base_results, _results(m["results_uri"]), seed=settings.seed)
        entries.append(leaderboard.entry_from_comparison(
            label=m["label"], hyperparameters=m["hyperparameters"], job=m["job"], key=m["key"],
            tuned_model=m["tuned_model"], endpoint=m["endpoint"], cost_usd=m["cost_usd"], comparison=cmp,
            results_uri=m["results_uri"], checkpoint=m.get("checkpoint"), errors=m.get("errors")))
    base_info = {"model": base["model"], "results_uri": base["results_uri"],
                 "means": {k: v["mean"] for k, v in base["summary"].items()}}
    board = leaderboard.build(entries, base=base_info, run_name=settings.run_name, examples=settings.samples,
                              grid=grid)
    uri = leaderboard.write(storage.join(out_dir, "leaderboard.json"), board)
    plot_uri = storage.write_bytes(storage.join(out_dir, "leaderboard.png"), plots.plot_leaderboard(board),
                                   "image/png")
    create_table_artifact(leaderboard.table_rows(board), key="sweep-leaderboard",
                          description=f"Sweep leaderboard; best: {board['best'] or 'none'}")
    for line in leaderboard.lines(board):
        get_run_logger().info(line)
    return {"board": board, "leaderboard_uri": uri, "plot_uri": plot_uri}


@task(name="read-champion")
def read_champion(settings: Settings) -> dict | None:
    return champion.current(settings.storage_root)


@task(name="challenge-champion")
def challenge_champion(settings: Settings, board: dict, champion_eval: dict | None, against: dict | None,
                       margin: float) -> dict:
    """Promote the sweep's best over `against` (the champion read before its evaluation) only on a
    significant ROUGE-L win; record the decision; on Vertex move the registry alias to the new champion."""
    best = board["best_entry"]
    model = {k: best.get(k) for k in ("label", "job", "key", "tuned_model", "endpoint", "hyperparameters",
                                      "results_uri", "checkpoint")}
    model["run_name"] = settings.run_name
    vs = None
    if against is not None and champion_eval is not None:
        cmp = stats.compare(_results(champion_eval["results_uri"]), _results(best["results_uri"]), seed=settings.seed)
        vs = cmp.metrics["rougeL"]
    decision = champion.decide(best["label"], against, vs, margin=margin)
    comparison = None if vs is None else {"difference": vs.difference, "ci_low": vs.ci_low, "ci_high": vs.ci_high,
                                          "n_paired": vs.n_paired, "p_value": vs.p_value}
    entry = champion.append(settings.storage_root, event="promoted" if decision.promote else "kept", model=model,
                            reason=decision.reason, against=against["seq"] if against else None,
                            comparison=comparison, margin=margin)
    alias = None
    if decision.promote:
        # A checkpoint champion is the same registry model (its version) served by the checkpoint's endpoint.
        status = JobStatus(name=best["job"], state=JobState.SUCCEEDED, key=best["key"],
                           tuned_model=best["tuned_model"], endpoint=best["endpoint"])
        alias = make_tuner(settings).mark_champion(status)
    get_run_logger().info("champion: %s", decision.reason)
    return {"promoted": decision.promote, "reason": decision.reason, "seq": entry["seq"], "alias": alias}


def sweep_markdown(board: dict, plot_uri: str, decision: dict | None) -> str:
    md = leaderboard.markdown(board, plot_uri)
    if decision is not None:
        verdict = "promoted" if decision.get("promoted") else "not promoted"
        md += f"\n### Champion\n\n{verdict}: {decision['reason']}\n"
        if decision.get("alias"):
            md += f"\nModel Registry alias: `{decision['alias']}`\n"
    return md


@task(name="write-sweep-report")
def write_sweep_report(settings: Settings, board: dict, plot_uri: str, decision: dict | None) -> str:
    md = sweep_markdown(board, plot_uri, decision)
    create_markdown_artifact(md, key="sweep-report", description="Sweep leaderboard and champion decision")
    return storage.write_text(storage.join(layout.sweep_dir(settings.run_root), "report.md"), md, "text/markdown")
