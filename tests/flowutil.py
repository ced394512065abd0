"""Helpers for flow tests: read what Prefect recorded about a run."""

from __future__ import annotations

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId


def task_states(state) -> dict[str, list[str]]:
    """Task name → state names of every task run under the flow run that produced `state`."""
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    out: dict[str, list[str]] = {}
    for r in runs:
        name = r.name.rsplit("-", 1)[0]
        out.setdefault(name, []).append(r.state.name)
    return out


def flow_artifacts(state) -> list:
    """Artifacts created by the flow run that produced `state` (its own tasks, not subflows')."""
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
