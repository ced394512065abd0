"""Tasks of the resumer (flows/resume.py): list the runs suspended for a tuning job, look at each job,
resume a run. The decision itself is sftflow.tuning.resume.decide."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateName,
)

from sftflow.backends import make_tuner
from sftflow.config import Settings
from sftflow.tuning.resume import JobLook, look_at_job


@task(name="list-suspended-runs")
def suspended_runs(flow_names: list[str]) -> list[dict]:
    """Runs of these flows now Suspended: [{id, name, flow, pause_key, config}], oldest first."""
    with get_client(sync_client=True) as client:
        flows = {f.id: f.name for f in client.read_flows(flow_filter=FlowFilter(name=FlowFilterName(any_=flow_names)))}
        if not flows:
            return []
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=flow_names)),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Suspended"]))),
        )
    return [{"id": str(r.id), "name": r.name, "flow": flows.get(r.flow_id, "?"),
             "pause_key": r.state.state_details.pause_key if r.state else None,
             "config": (r.parameters or {}).get("config")}
            for r in sorted(runs, key=lambda r: r.expected_start_time or r.created)]


@task(name="look-at-tuning-job")
def look_at_run_job(settings: Settings, job: str) -> JobLook:
    """One poll of `job`, on the backend of the suspended run's own settings (its project, region, storage)."""
    try:
        tuner = make_tuner(settings)
    except Exception as exc:  # noqa: BLE001 - one run's bad settings must not stop the others
        return JobLook(error=f"cannot reach its backend: {exc}")
    return look_at_job(tuner, job)


@task(name="resume-flow-run")
def resume_run(run_id: str) -> str:
    """Resume one suspended run (Prefect reschedules it through its deployment); what the server answered.
    A run already resumed (by another tick, or by hand) is refused by the server, and that is fine."""
    with get_client(sync_client=True) as client:
        result = client.resume_flow_run(run_id)
    status = result.status.value
    if status != "ACCEPT":
        reason = getattr(result.details, "reason", "") or ""
        get_run_logger().info("run %s not resumed: %s %s", run_id, status, reason)
        return f"{status}: {reason}"
    return "resumed"
