"""Flow resume_finished: resume the runs suspended while their tuning job trains (wait_mode=suspend) once
the job has ended, or when tuning_timeout has run out for it.

Shipped in prefect.yaml as the scheduled deployment `resume_finished/local` (every 2 minutes). Each tick
lists the Suspended runs of the tuning flows, reads the job each one waits for from its pause key
(sftflow/tuning/resume.py), polls that job once with the run's own settings, and resumes the runs
`decide` says to; the others are left for the next tick. Every step is safe to repeat: a run already
resumed is no longer Suspended (a second tick finds nothing to do, and a resume that lost a race is
refused by the server), and a tick killed midway leaves the runs it did not reach suspended for the next.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.common import settings_for
from sftflow.tuning.resume import JobLook, Suspension, decide
from tasks.resume import look_at_run_job, resume_run, suspended_runs

#: The flows whose runs suspend for a tuning job (the pipeline suspends as a whole; tune on its own).
TUNING_FLOWS = ("sft_pipeline", "tune")


@flow(name="resume_finished", log_prints=True, persist_result=False, result_serializer="json")
def resume_finished(flow_names: list[str] = list(TUNING_FLOWS)) -> dict:
    """Resume every suspended run whose tuning job has ended (or whose tuning_timeout ran out).

    Args:
        flow_names: The flows whose Suspended runs are looked at.
    """
    log = get_run_logger()
    rows = []
    for run in suspended_runs(flow_names):
        suspension = Suspension.parse(run["pause_key"])
        look = None
        if suspension is not None:
            try:
                look = look_at_run_job(settings_for(run["config"]), suspension.job)
            except Exception as exc:  # noqa: BLE001 - a run with bad settings must not stop the others
                look = JobLook(error=f"its settings: {exc}")
        decision = decide(suspension, look, now=time.time())
        outcome = resume_run(run["id"]) if decision.resume else "left suspended"
        log.info("run %s (%s): %s: %s", run["name"], run["flow"], outcome, decision.reason)
        rows.append({"run": run["name"], "flow": run["flow"], "id": run["id"],
                     "job": suspension.job if suspension else None, "outcome": outcome, "reason": decision.reason})
    if rows:
        create_table_artifact(rows, key="resume-finished", description="Suspended runs and what the resumer did")
    resumed = [r["id"] for r in rows if r["outcome"] == "resumed"]
    log.info("%d suspended run(s), %d resumed", len(rows), len(resumed))
    return {"suspended": len(rows), "resumed": resumed, "runs": rows}
