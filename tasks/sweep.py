"""Sweep tasks: one grid point's tuning job under a concurrency limit, the leaderboard, the report.

The limit: with a Prefect server (PREFECT_API_URL) a global concurrency limit named after the
backend and project, so every sweep using that server shares the tuning quota; without one (the
ephemeral API lives and dies with this process) an in-process semaphore. Prefect's `concurrency()`
only warns, and does not throttle, on a limit that was never created, so the limit is created first
(https://docs.prefect.io/v3/develop/global-concurrency-limits).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from sftflow.infra import storage
from sftflow.backends import make_tuner
from sftflow.backends.base import TuningSpec
from sftflow.config import Settings
from sftflow.records import ChampionDecision, Evaluation, SweepLeaderboard, TunedConfiguration
from sftflow.selection.sweep_report import lines, table_rows
from sftflow.selection import sweep as steps
from sftflow.tuning.setup import TuningSetup
from tasks.champion import judge_fn
from tasks.tuning import await_tuning_job, read_tuning_record, record_tuned_model, submit_tuning_job

_semaphores: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_semaphores_lock = threading.Lock()


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
def committed_configurations(setup: TuningSetup, specs: dict[str, TuningSpec]) -> list[str]:
    """sftflow.selection.sweep.committed_labels with this backend's tuner."""
    return steps.committed_labels(make_tuner(setup), setup.storage_root, specs)


def cancel_grid_jobs(setup: TuningSetup, specs: list[TuningSpec]) -> list[str]:
    """Cancel the grid's unfinished jobs (the flow was interrupted; cancel_job_on_interrupt). Not a task:
    it runs while the flow is torn down (sftflow.selection.sweep.cancel_unfinished, which logs to the sftflow
    loggers: the run's logs in the UI have them too). Returns the jobs it asked to cancel."""
    return steps.cancel_unfinished(make_tuner(setup), specs)


@task(name="tune-configuration", task_run_name="tune-{label}")
def tune_configuration(setup: TuningSetup, label: str, spec: TuningSpec, estimate: dict,
                       max_parallel: int) -> TunedConfiguration:
    """One grid point: its recorded result, else (holding a slot) attach to or submit its job and await it."""
    record = read_tuning_record(setup, spec.key)
    if record is None:
        with tuning_slot(steps.limit_name(setup.backend, setup.project, setup.region), max_parallel) as kind:
            get_run_logger().info("%s: holding a tuning slot (%s limit of %d)", label, kind, max_parallel)
            job = submit_tuning_job(setup, spec, estimate)
            status = await_tuning_job(setup, job["name"])
        record = record_tuned_model(setup, spec, status)
    return TunedConfiguration(label=label, job=record.name, key=spec.key, tuned_model=record.tuned_model,
                              endpoint=record.endpoint, checkpoints=tuple(record.checkpoints),
                              cost_usd=estimate.get("total_usd"))


@task(name="build-leaderboard")
def build_leaderboard(settings: Settings, base: Evaluation, models: list[dict], grid: dict,
                      test_path: str | None = None) -> SweepLeaderboard:
    """sftflow.selection.sweep.build_and_save_leaderboard plus the leaderboard as a table artifact. With
    promotion_metric 'judge', every model is also judged against the base (runs/<run>/judge/sweep-<label>/)."""
    judge = settings.promotion_metric == "judge" and test_path is not None
    lb = steps.build_and_save_leaderboard(
        settings.run_root, settings.run_name, base, models, grid=grid, samples=settings.samples, seed=settings.seed,
        metric=settings.promotion_metric,
        judge=(lambda b, m, label: judge_fn(settings, test_path, f"sweep-{label}")(b, m)) if judge else None)
    create_table_artifact(table_rows(lb.board), key="sweep-leaderboard",
                          description=f"Sweep leaderboard; best: {lb.board['best'] or 'none'}")
    for line in lines(lb.board):
        get_run_logger().info(line)
    return lb


@task(name="write-sweep-report")
def write_sweep_report(settings: Settings, board: dict, plot_uri: str, decision: ChampionDecision | None) -> str:
    uri = steps.write_sweep_report(settings.run_root, board, plot_uri, decision)
    create_markdown_artifact(storage.read_text(uri), key="sweep-report",
                             description="Sweep leaderboard and champion decision")
    return uri
