"""wait_mode=suspend: a deployment run suspends while its tuning job trains, instead of polling it.

`suspend_while_training` is called by the tune flow right where it would start polling. The run that
suspends is the deployment's own run: the tune flow itself, or the pipeline whose subflow it is (Prefect
suspends no subflow; in 3.9 a child flow shares its parent's suspension request, so the child asks the
server to suspend the root and the whole process exits at once). Its process exits, so its worker and
infrastructure are released; `flows/resume.py` (the `resume_finished` deployment) resumes it when the job
has ended, and the run starts again from the top: every step before tuning is served from cache, the
tune flow re-attaches to the job through its intent, polls it once and goes on
(https://docs.prefect.io/v3/develop/pause-resume#suspending-a-flow-run). The decisions are plain
functions in sftflow/tuning/resume.py.

Work running beside the job (the pipeline's baseline evaluation) is waited for before suspending
(`finish_before_suspending`): its result is then persisted, and the resumed run is served it from cache.
"""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.flow_runs import suspend_flow_run
from prefect.states import Paused

from sftflow.backends.base import JobState
from sftflow.config import Settings
from sftflow.tuning.resume import already_waited, next_suspension, subflow_pause_timeout, suspend_timeout

#: Futures of a run (by its flow run id) to complete before it suspends.
_before_suspending: dict[UUID, list[Any]] = {}


def finish_before_suspending(future: Any) -> Any:
    """Have the current run wait for `future` before it suspends for its tuning job (so that the task's
    result is persisted and the resumed run is served it from cache, not recomputed). Returns `future`."""
    ctx = FlowRunContext.get()
    if ctx is not None and ctx.flow_run is not None:
        _before_suspending.setdefault(ctx.flow_run.id, []).append(future)
    return future


def _deployment_run(client, run) -> Any:
    """The run a suspension applies to: `run` itself, or the top of the flow runs it is a subflow of."""
    run = client.read_flow_run(run.id)  # fresh: its pause keys
    while run.parent_task_run_id is not None:
        parent = client.read_task_run(run.parent_task_run_id)
        run = client.read_flow_run(parent.flow_run_id)
    return run


def _pause_with_root(run, root, key: str, timeout: int) -> None:
    """A subflow whose root was just suspended: mark it Paused too, so that it does not stay Running with no
    process and no heartbeat (the zombie automation would mark it Crashed). Paused, not Suspended: a Suspended
    state is what Prefect resumes through a deployment (a subflow has none), and the resumed root would take a
    Suspended subflow for a new suspension request. The resumed root reuses this run (Paused -> Running: Prefect
    reattaches a subflow to its parent's task run), and a root cancelled meanwhile cancels it with itself
    (Prefect's cancellation clean-up); `timeout` outlives the root's suspension, after which Prefect fails it."""
    message = (f"paused with its parent run {root.name}, suspended while the tuning job trains; it goes on when "
               f"{root.name} is resumed (by the resume_finished deployment): resume {root.name}, not this run")
    with get_client(sync_client=True) as client:
        result = client.set_flow_run_state(run.id, Paused(timeout_seconds=timeout, pause_key=key, message=message))
    if result.status.value != "ACCEPT":
        get_run_logger().warning("subflow run %s stays %s: the server refused Paused (%s)", run.name,
                                 run.state_name, getattr(result.details, "reason", ""))


def suspend_while_training(s: Settings, intent: str, job: str, state: str) -> float:
    """wait_mode=suspend: suspend the deployment run until `job` (in `state`, just read) has ended; the
    process exits here and the resumed run comes back through this call, then returns. Returns the seconds
    of tuning_timeout already spent while suspended for this job (0 with wait_mode=poll), for the poll that
    follows. Polls instead (a warning says why) where no run can be suspended: no deployment (a CLI run), or
    work beside the job that failed."""
    if s.wait_mode != "suspend":
        return 0.0
    log = get_run_logger()
    ctx = FlowRunContext.get()
    with get_client(sync_client=True) as client:
        target = _deployment_run(client, ctx.flow_run)
    if target.deployment_id is None:
        log.warning("wait_mode=suspend: run %s has no deployment to resume it through (a command-line run?): "
                    "polling the tuning job instead", target.name)
        return 0.0
    keys = target.empirical_policy.pause_keys or set()
    now = time.time()
    waited = already_waited(intent, job, keys, tuning_timeout=s.tuning_timeout, now=now)
    if JobState(state).ended:
        return waited
    plan = next_suspension(intent, job, keys, tuning_timeout=s.tuning_timeout, now=now)
    if now >= plan.deadline:
        log.info("tuning_timeout ran out for job %s while the run was suspended: polling once applies it", job)
        return waited
    for future in _before_suspending.pop(target.id, []):
        future.wait()
        if not future.state.is_completed():
            log.warning("wait_mode=suspend: a task beside the tuning job ended %s: polling the job instead of "
                        "suspending", future.state.name)
            return waited
    timeout = suspend_timeout(plan, now)
    log.info("job %s is %s: suspending run %s (its process exits; the resume_finished deployment resumes it once "
             "the job has ended, or when tuning_timeout runs out in %.0f s); pause key %s", job, state, target.name,
             plan.deadline - now, plan.key)
    own = target.id == ctx.flow_run.id
    suspend_flow_run(flow_run_id=None if own else target.id, timeout=timeout, key=plan.key)
    if not own and ctx.flow_run_suspension_request.is_requested():
        _pause_with_root(ctx.flow_run, target, plan.key, subflow_pause_timeout(timeout))
    ctx.flow_run_suspension_request.raise_if_requested()  # a subflow: the root's process exits now
    log.warning("the server refused to suspend run %s (pause key %s already used): polling instead", target.name,
                plan.key)
    return waited
