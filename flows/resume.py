"""Flow resume_finished: resume the runs suspended while their tuning job trains (wait_mode=suspend) once
the job has ended, or when tuning_timeout has run out for it; cancel the job of a run cancelled while suspended.

Shipped in prefect.yaml as the scheduled deployment `resume_finished/local`: a run every 10 minutes that
watches for 11 (`watch_s`), making a pass every `period_s` (30 s), so one run is always watching and a job's
end reaches its run within one period plus one poll, without a fresh process per pass (a process per tick
cost ~10 s of pull step and Prefect import on top of the period). `sftflow resume-finished` makes one pass.

Each pass lists the Suspended runs of the tuning flows, reads the job each one waits for from its pause key
(sftflow/tuning/resume.py), polls that job once with the run's own settings, and resumes the runs `decide`
says to; the others are left for the next pass. It then looks at the runs cancelled while suspended (Prefect
cancels a suspended run on the server alone: no process is left to cancel its job) and cancels their job
once. Every step is safe to repeat: a run already resumed is no longer Suspended (a second pass finds nothing
to do, and a resume that lost a race, e.g. two overlapping resumer runs, is refused by the server), a handled
cancellation is tagged on its run, and a pass killed midway leaves the rest for the next.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.context import FlowRunContext

from flows.common import settings_for
from sftflow.tuning.resume import (
    CANCEL_LOOKBACK_S,
    JOB_CANCELLED_TAG,
    JobLook,
    Suspension,
    decide,
    decide_cancel,
    next_pass_in,
    watch_until,
)
from tasks.resume import (
    cancel_job,
    cancelled_runs,
    look_at_run_job,
    mark_cancel_handled,
    resume_run,
    suspended_runs,
)

#: The flows whose runs suspend for a tuning job (the pipeline suspends as a whole; tune on its own).
TUNING_FLOWS = ("sft_pipeline", "tune")


def _look(config, job: str) -> JobLook:
    try:
        return look_at_run_job.fn(settings_for(config), job)
    except Exception as exc:  # noqa: BLE001 - a run with bad settings must not stop the others
        return JobLook(error=f"its settings: {exc}")


def _resume_pass(flow_names: list[str]) -> list[dict]:
    rows = []
    for run in suspended_runs.fn(flow_names):
        suspension = Suspension.parse(run["pause_key"])
        look = _look(run["config"], suspension.job) if suspension is not None else None
        decision = decide(suspension, look, now=time.time())
        outcome = resume_run(run["id"]) if decision.resume else "left suspended"
        rows.append({"run": run["name"], "flow": run["flow"], "id": run["id"],
                     "job": suspension.job if suspension else None, "outcome": outcome, "reason": decision.reason})
    return rows


def _cancel_pass(flow_names: list[str]) -> list[dict]:
    rows = []
    for run in cancelled_runs.fn(flow_names, since=time.time() - CANCEL_LOOKBACK_S):
        if run["job"] is None:  # cancelled while its process ran (it applied cancel_job_on_interrupt), or never slept
            mark_cancel_handled(run["id"], run["tags"])
            continue
        decision = decide_cancel(run["job"], _look(run["config"], run["job"]))
        outcome = decision.action
        if decision.action == "cancel":
            outcome = cancel_job(settings_for(run["config"]), run["job"])
            if outcome == "job cancelled":
                mark_cancel_handled(run["id"], run["tags"], JOB_CANCELLED_TAG)
        elif decision.action == "done":
            mark_cancel_handled(run["id"], run["tags"])
        rows.append({"run": run["name"], "flow": run["flow"], "id": run["id"], "job": run["job"],
                     "outcome": outcome, "reason": decision.reason})
    return rows


@flow(name="resume_finished", log_prints=True, persist_result=False, result_serializer="json")
def resume_finished(flow_names: list[str] = list(TUNING_FLOWS), watch_s: float = 0.0, period_s: float = 30.0) -> dict:
    """Resume every suspended run whose tuning job has ended (or whose tuning_timeout ran out); cancel the job of
    every run cancelled while suspended.

    Args:
        flow_names: The flows whose Suspended (and Cancelled) runs are looked at.
        watch_s: Keep watching this many seconds after the run's scheduled start (0: one pass). Schedule a run
            a little more often than this, so that one is always watching.
        period_s: Seconds between the starts of two passes while watching.
    """
    log = get_run_logger()
    ctx = FlowRunContext.get()
    scheduled = ctx.flow_run.expected_start_time if ctx is not None and ctx.flow_run is not None else None
    stop_at = watch_until(scheduled.timestamp() if scheduled else None, time.time(), watch_s)
    resumed: list[str] = []
    said: dict[str, str] = {}  # what was last logged per run: a watching run logs changes, not every pass
    passes, rows, acted = 0, [], []
    while True:
        began = time.time()
        rows = _resume_pass(flow_names)
        cancels = _cancel_pass(flow_names)
        passes += 1
        for row in rows + cancels:
            line = f"{row['outcome']}: {row['reason']}"
            if said.get(row["id"]) != line:
                log.info("run %s (%s): %s", row["run"], row["flow"], line)
                said[row["id"]] = line
        done = [r for r in rows if r["outcome"] == "resumed"] + [r for r in cancels if r["outcome"] == "job cancelled"]
        resumed += [r["id"] for r in rows if r["outcome"] == "resumed"]
        acted += done
        summary = f"{len(rows)} suspended run(s), {sum(r['outcome'] == 'resumed' for r in rows)} resumed"
        if passes == 1 or said.get("") != summary or done:
            log.info("pass %d: %s", passes, summary)
            said[""] = summary
        pause = next_pass_in(began, time.time(), period_s=period_s, stop_at=stop_at)
        if pause is None:
            break
        time.sleep(pause)
    table = acted or rows
    if table:
        create_table_artifact(table, key="resume-finished", description="Suspended runs and what the resumer did")
    return {"suspended": len(rows), "resumed": resumed, "runs": rows, "passes": passes,
            "cancelled_jobs": [r["job"] for r in acted if r["outcome"] == "job cancelled"]}
