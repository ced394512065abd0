"""Tasks of the resumer (flows/resume.py): list the runs suspended for a tuning job, look at each job,
resume a run; list the runs cancelled while suspended, cancel their job once. The decisions themselves are
sftflow.tuning.resume.decide and decide_cancel.

The listing and looking functions are tasks for a one-off call; the watching resumer calls them as plain
functions (`.fn`: a pass every few seconds would otherwise add task runs by the hundred to each of its runs),
and keeps the task runs for what it does: resume a run, cancel a job."""

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
from sftflow.tuning.resume import (
    CANCEL_CHECKED_TAG,
    CANCELLED_STATES,
    KEY_PREFIX,
    JobLook,
    cancelled_while_suspended,
    look_at_job,
)


def _runs_in_states(client, flow_names: list[str], states: list[str]) -> tuple[dict, list]:
    """(flow id → flow name, the runs of those flows whose state is named in `states`); no runs when no such flow
    exists yet."""
    flows = {f.id: f.name for f in client.read_flows(flow_filter=FlowFilter(name=FlowFilterName(any_=flow_names)))}
    if not flows:
        return flows, []
    runs = client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=flow_names)),
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(name=FlowRunFilterStateName(any_=states))),
    )
    return flows, runs


@task(name="list-suspended-runs")
def suspended_runs(flow_names: list[str]) -> list[dict]:
    """Runs of these flows now Suspended: [{id, name, flow, pause_key, config}], oldest first."""
    with get_client(sync_client=True) as client:
        flows, runs = _runs_in_states(client, flow_names, ["Suspended"])
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


@task(name="list-runs-cancelled-while-suspended")
def cancelled_runs(flow_names: list[str], since: float) -> list[dict]:
    """Runs of these flows Cancelled (or Cancelling) since epoch `since` while suspended for a tuning job, and
    not yet handled (no CANCEL_CHECKED_TAG): [{id, name, flow, job, config, tags}]. One state-history read per
    run that ever suspended for a job; any other cancelled run is skipped by its pause keys alone."""
    out = []
    with get_client(sync_client=True) as client:
        flows, runs = _runs_in_states(client, flow_names, list(CANCELLED_STATES))
        for r in runs:
            keys = r.empirical_policy.pause_keys or set()
            if (CANCEL_CHECKED_TAG in (r.tags or []) or not any(k.startswith(KEY_PREFIX + "|") for k in keys)
                    or r.state is None or r.state.timestamp.timestamp() < since):
                continue
            history = sorted(client.read_flow_run_states(r.id), key=lambda s: s.timestamp)
            suspension = cancelled_while_suspended((s.name, s.state_details.pause_key) for s in history)
            out.append({"id": str(r.id), "name": r.name, "flow": flows.get(r.flow_id, "?"), "tags": list(r.tags or []),
                        "job": suspension.job if suspension else None, "config": (r.parameters or {}).get("config")})
    return out


@task(name="cancel-tuning-job")
def cancel_job(settings: Settings, job: str) -> str:
    """Ask the backend to cancel `job` once (its run was cancelled while suspended); what happened, in words. A
    failure is reported, not raised: the run is not marked handled, and the next pass looks again."""
    try:
        make_tuner(settings).cancel(job)
    except Exception as exc:  # noqa: BLE001 - one run's failure must not stop the others
        get_run_logger().warning("cancelling tuning job %s failed (%s): asked again at the next pass", job, exc)
        return f"cancel failed: {exc}"
    return "job cancelled"


def mark_cancel_handled(run_id: str, tags: list[str], *extra: str) -> None:
    """Record on the run (its tags, shown in the UI) that the resumer handled its cancellation: no later pass
    looks at it again (what makes cancelling its job happen once)."""
    with get_client(sync_client=True) as client:
        client.update_flow_run(run_id, tags=sorted({*tags, CANCEL_CHECKED_TAG, *extra}))
