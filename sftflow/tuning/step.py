"""Step: tuning's records — the finished intent (tuning/k….json, shared by runs and reruns),
the run's tuned model (runs/<run>/tuned.json), the loss plot, and a dry run's plan.
Submitting and awaiting the job are sftflow.tuning.intent (ensure_job, await_job)."""

from __future__ import annotations

from dataclasses import asdict

from sftflow.cost import estimate as cost
from sftflow.infra import layout, storage
from sftflow.backends.base import JobStatus, TuningSpec
from sftflow.records import TunedModel, TuningRecord


def read_tuning_record(storage_root: str, key: str) -> TuningRecord | None:
    """A finished intent's record, or None: a rerun that finds one calls no tuning API."""
    return TuningRecord.read_if_exists(layout.tuning_record_uri(storage_root, key))


def write_tuning_record(storage_root: str, run_name: str, spec: TuningSpec, status: JobStatus) -> TuningRecord:
    """Save the finished job's status with its spec and run name, where reruns and cleanup find it."""
    record = TuningRecord.of(status, asdict(spec), run_name)
    record.write(layout.tuning_record_uri(storage_root, spec.key), sort_keys=True)
    return record


def save_tuned_model(run_root: str, key: str, record: TuningRecord, estimate: dict | None) -> TunedModel:
    """runs/<run>/tuned.json: what `evaluate --model tuned` and the report read."""
    tuned = TunedModel(job=record.name, key=key, tuned_model=record.tuned_model, endpoint=record.endpoint,
                       stats=record.stats, create_time=record.create_time, update_time=record.update_time,
                       cost_estimate=estimate)
    tuned.write(layout.tuned_uri(run_root))
    return tuned


def save_loss_plot(run_root: str, record: TuningRecord) -> str | None:
    """runs/<run>/tuning/loss.png from the job's loss curves, or None when it reported none."""
    curves = {k: [tuple(p) for p in v] for k, v in (record.metrics or {}).items() if v}
    if not curves:
        return None
    from sftflow.evaluation.plots import plot_loss_curves

    return storage.write_bytes(layout.loss_plot_uri(run_root), plot_loss_curves(curves), "image/png")


def dry_run_plan(spec: TuningSpec, request: dict, estimate: dict, *, backend: str, cap_usd: float,
                 storage_root: str) -> dict:
    """What `tune` would do, without calling a tuning API: the estimate, the cap and `request`, exactly what
    submit would send (the backend's Tuner.request(spec))."""
    est = cost.CostEstimate.from_dict(estimate)
    return {
        "dry_run": True,
        "backend": backend,
        "estimate": estimate,
        "cap_usd": cap_usd,
        "within_cap": cost.within_cap(est, cap_usd),
        "job": request,
        "finished_record": storage.exists(layout.tuning_record_uri(storage_root, spec.key)),
    }
