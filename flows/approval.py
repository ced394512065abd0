"""The gates before a tuning job is paid for: hard cap, then approval (a Prefect pause in the UI).

`cost_gate` is called by a flow (a pause cannot happen inside a task, prefect#19435) right before a
new job would be submitted; attaching to a job already running is not gated (its cost is committed).
A sweep checks its grid's cap itself and asks `approval_gate` once for all its new jobs.

`approval_mode=suspend` (the gcp deployment's) asks with `suspend_flow_run` instead of `pause_flow_run`:
the run's process (a container with a time limit) exits while a person decides, and the answer
reschedules the run through its deployment, which runs the flow again from the top; the same pause
key then returns the answer at once (https://docs.prefect.io/v3/develop/pause-resume).
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.context import FlowRunContext
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.input import RunInput
from prefect.settings import PREFECT_API_URL
from pydantic import Field

from sftflow.cost import estimate as cost
from sftflow.cost.approval import (
    ApprovalDenied,
    Priced,
    approval_markdown,
    ask_terminal,
    needs_approval,
    refused_message,
)
from sftflow.backends import make_tuner
from sftflow.backends.base import TuningSpec
from sftflow.config import Settings
from sftflow.tuning.intent import live_job
from tasks.common import RETRY_TRANSIENT, retry_transient

#: Seconds between a paused run's checks for a decision (Prefect's default is 10).
PAUSE_POLL_S = 2


class ApprovalInput(RunInput):
    """The form the Prefect UI shows on a run paused for approval."""

    approve: bool = Field(description="Submit the new tuning job(s) at the estimated cost "
                                      "(unticked: none is submitted, the run ends)")
    note: str = Field("", description="Optional note, kept in the run's logs")


@task(name="find-live-tuning-job", retry_condition_fn=retry_transient, **RETRY_TRANSIENT)
def find_live_job(settings: Settings, key: str) -> str | None:
    return live_job(make_tuner(settings), key)


def cost_gate(s: Settings, spec: TuningSpec, estimate: dict, data: list[tuple[str, str, dict]],
              job: dict) -> str:
    """Cap, then approval, before a new job; returns how it passed. Raises CostCapExceeded or
    ApprovalDenied (no job submitted) otherwise."""
    est = cost.CostEstimate.from_dict(estimate)
    if cost.within_cap(est, s.max_tuning_cost_usd) and not needs_approval(est, s.approve_above_usd):
        return f"within approve_above_usd (${s.approve_above_usd:g})"
    if name := find_live_job(s, spec.key):  # asked only when a gate would stop the run
        get_run_logger().info("tuning job %s for this intent is already running: attaching, its cost is committed",
                              name)
        return "attaching to a running job"
    cost.check_cap(est, s.max_tuning_cost_usd)
    return approval_gate(s, est, approval_markdown(est, s.approve_above_usd, s.max_tuning_cost_usd, data, job),
                         key=f"approve-{spec.key}")


def approval_gate(s: Settings, est: Priced, markdown: str, key: str) -> str:
    """Approval of what new jobs will cost (one job's estimate, or a sweep's grid: one decision for all),
    after the cap; returns how it passed, or raises ApprovalDenied. `markdown` is what the approver reads;
    `key` names the pause (one per run)."""
    if not needs_approval(est, s.approve_above_usd):
        return f"within approve_above_usd (${s.approve_above_usd:g})"
    log = get_run_logger()
    create_markdown_artifact(markdown, key="tuning-approval",
                             description=f"Approve tuning at {cost.usd(est.total_usd)}?")
    mode = s.approval_mode
    if mode == "approved":
        log.info("estimate %s above approve_above_usd $%g: approved in advance", est.summary(), s.approve_above_usd)
        return "approved in advance"
    if mode == "prompt":
        if ask_terminal(est, s.approve_above_usd):
            return "approved on the terminal"
        raise ApprovalDenied(refused_message(est, s.approve_above_usd, "answered no on the terminal"))
    if mode == "suspend":
        return _suspended_approval(s, est, key)
    if mode == "refuse" or not PREFECT_API_URL.value():
        why = ("not asked: no terminal" if mode == "refuse"
               else "no Prefect server holds this run, so nobody can approve it in the UI")
        raise ApprovalDenied(refused_message(est, s.approve_above_usd, why))
    log.warning("estimate %s is above approve_above_usd $%g: paused for approval in the Prefect UI (Resume, then "
                "tick approve); no answer within %.0f s ends the run with no job submitted", est.summary(),
                s.approve_above_usd, s.approval_timeout_s)
    try:
        answer = pause_flow_run(wait_for_input=ApprovalInput, timeout=int(s.approval_timeout_s),
                                poll_interval=PAUSE_POLL_S, key=key)
    except FlowPauseTimeout:  # the server may have failed the run first ("... never resumed"): same outcome
        raise ApprovalDenied(refused_message(est, s.approve_above_usd,
                                             f"no answer within {s.approval_timeout_s:g} s")) from None
    note = f": {answer.note}" if answer.note else ""
    if not answer.approve:
        raise ApprovalDenied(refused_message(est, s.approve_above_usd, f"rejected in the Prefect UI{note}"))
    log.info("tuning approved in the Prefect UI%s", note)
    return "approved in the Prefect UI"


def _suspended_approval(s: Settings, est: Priced, key: str) -> str:
    """Suspend the run until the UI's answer (the process exits here; a resume runs the flow again from the top,
    and this call then returns the answer). Only a deployment's own run (not a subflow) can be suspended."""
    run = (ctx := FlowRunContext.get()) and ctx.flow_run
    if not PREFECT_API_URL.value() or run is None or run.deployment_id is None or run.parent_task_run_id:
        raise ApprovalDenied(refused_message(est, s.approve_above_usd, "approval_mode=suspend needs a deployment's "
                                             "own run, and this run has no deployment to resume it through"))
    get_run_logger().warning(
        "estimate %s is above approve_above_usd $%g: run suspended for approval in the Prefect UI (Resume, then tick "
        "approve); its process exits now and the answer starts it again from the top; after %.0f s it can no "
        "longer be resumed (a resume then fails it) and no job is submitted", est.summary(), s.approve_above_usd, s.approval_timeout_s)
    try:
        answer = suspend_flow_run(wait_for_input=ApprovalInput, timeout=int(s.approval_timeout_s), key=key)
    except RuntimeError as exc:  # the server refused the suspension
        raise ApprovalDenied(refused_message(est, s.approve_above_usd, f"could not suspend: {exc}")) from None
    note = f": {answer.note}" if answer.note else ""
    if not answer.approve:
        raise ApprovalDenied(refused_message(est, s.approve_above_usd, f"rejected in the Prefect UI{note}"))
    get_run_logger().info("tuning approved in the Prefect UI%s (the run was suspended)", note)
    return "approved in the Prefect UI"
