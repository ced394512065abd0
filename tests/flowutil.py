"""Helpers for flow tests: read what Prefect recorded about a run."""

from __future__ import annotations

import time

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId


def task_states(state, expect: dict[str, int] | None = None, timeout: float = 60.0) -> dict[str, list[str]]:
    """Task name → state names of every task run under the flow run that produced `state`.

    Prefect records task runs from events, a moment after the flow returns (longer on a busy
    machine), so this waits until `expect` (task name → number of runs) is met and no run is unfinished.
    """
    flow_run_id = state.state_details.flow_run_id
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        out: dict[str, list[str]] = {}
        for r in runs:
            name = r.name.rsplit("-", 1)[0]
            out.setdefault(name, []).append(r.state.name if r.state else "")
        settled = bool(runs) and all(r.state is not None and r.state.is_final() for r in runs)  # none yet: wait
        complete = all(len(out.get(name, [])) >= n for name, n in (expect or {}).items())
        if (settled and complete) or time.monotonic() > deadline:
            return out
        time.sleep(0.2)


def flow_artifacts(state) -> list:
    """Artifacts created by the flow run that produced `state` (its own tasks, not subflows')."""
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
