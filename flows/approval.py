"""The gates before a tuning job is paid for: hard cap, then approval (a Prefect pause in the UI).

`cost_gate` is called by a flow (a pause cannot happen inside a task, prefect#19435) right before a
new job would be submitted; attaching to a job already running is not gated (its cost is committed).
A sweep checks its grid's cap itself and asks `approval_gate` once for all its new jobs.
"""

from __future__ import annotations

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.settings import PREFECT_API_URL
from pydantic import Field

from sftflow.cost import estimate as cost
from sftflow.cost.approval import Priced, approval_markdown, decide_without_pause, needs_approval, ui_decision
from sftflow.backends.base import TuningSpec
from sftflow.config import Settings
from tasks.approval import find_live_job

#: Seconds between a paused run's checks for a decision (Prefect's default is 10).
PAUSE_POLL_S = 2


class ApprovalInput(RunInput):
    """The form the Prefect UI shows on a run paused for approval."""

    approve: bool = Field(description="Submit the new tuning job(s) at the estimated cost "
                                      "(unticked: none is submitted, the run ends)")
    note: str = Field("", description="Optional note, kept in the run's logs")


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
    passed = decide_without_pause(est, s.approve_above_usd, s.approval_mode, can_pause=bool(PREFECT_API_URL.value()))
    if passed is not None:
        log.info("estimate %s above approve_above_usd $%g: %s", est.summary(), s.approve_above_usd, passed)
        return passed
    log.warning("estimate %s is above approve_above_usd $%g: paused for approval in the Prefect UI (Resume, then "
                "tick approve); no answer within %.0f s ends the run with no job submitted", est.summary(),
                s.approve_above_usd, s.approval_timeout_s)
    try:
        answer = pause_flow_run(wait_for_input=ApprovalInput, timeout=int(s.approval_timeout_s),
                                poll_interval=PAUSE_POLL_S, key=key)
    except FlowPauseTimeout:  # the server may have failed the run first ("... never resumed"): same outcome
        answer = None
    passed = ui_decision(est, s.approve_above_usd, None if answer is None else answer.approve,
                         answer.note if answer else "", s.approval_timeout_s)
    log.info("tuning approved in the Prefect UI%s", f": {answer.note}" if answer.note else "")
    return passed
