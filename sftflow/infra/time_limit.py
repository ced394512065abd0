"""Does the infrastructure's time limit cover what a run needs? Checked when a pipeline or tune flow starts.

A flow deployed to Cloud Run or Vertex AI lives at most as long as the job's time limit (Cloud Run's `timeout`,
Vertex AI's `maximum_run_time_hours`: 12 h in prefect.yaml's gcp deployment, which also passes that number to the
run as SFTFLOW_INFRA_TIMEOUT_S, the setting `infra_timeout_s`). Past it the container is stopped mid-run: a raised
`tuning_timeout` that the limit no longer covers fails hours in, after the job was paid for. So the run fails at
its start instead, in one line naming both numbers.

What a run needs: while polling (wait_mode poll), the job's whole wait (tuning_timeout) plus, after it, a batch
evaluation's queue (batch_pending_timeout) plus OTHER_WORK_S for preparing the data and evaluating; with
wait_mode suspend the run sleeps (no container) while the job trains, so only the work between suspensions: the
batch queue and the other work. Plain numbers in, no settings import (a setting reaches this as an argument).
"""

from __future__ import annotations

from sftflow.errors import ConfigError

#: Preparing the data, the evaluations' requests and the report, around the tuning job: the hour README's gcp
#: table and tests/test_gcp_deployment.py add to tuning_timeout + batch_pending_timeout.
OTHER_WORK_S = 3600.0


def run_needs(*, wait_mode: str, tuning_timeout: float, batch_pending_timeout: float,
              evaluates: bool = True) -> tuple[float, str]:
    """Seconds a run needs in one container, and how they add up (for the error line). `evaluates`: the flow
    evaluates after tuning (the pipeline; a batch evaluation may queue for batch_pending_timeout)."""
    parts = []
    if wait_mode != "suspend":
        parts.append(("tuning_timeout", tuning_timeout))
    if evaluates:
        parts.append(("batch_pending_timeout", batch_pending_timeout))
    parts.append(("the rest (preparing, evaluating)", OTHER_WORK_S))
    how = " + ".join(f"{name} {value:.0f} s" for name, value in parts)
    if wait_mode == "suspend":
        how += " (wait_mode suspend: the run sleeps while the job trains)"
    return sum(v for _, v in parts), how


def check_time_limit(flow: str, limit_s: float | None, *, wait_mode: str, tuning_timeout: float,
                     batch_pending_timeout: float, evaluates: bool = True) -> None:
    """Raise ConfigError, one line naming both numbers, when the infrastructure's limit `limit_s` (None: unknown,
    no check) is below what the run needs."""
    if limit_s is None:
        return
    need, how = run_needs(wait_mode=wait_mode, tuning_timeout=tuning_timeout,
                          batch_pending_timeout=batch_pending_timeout, evaluates=evaluates)
    if limit_s < need:
        raise ConfigError(
            f"{flow}: the infrastructure stops this run after {limit_s:.0f} s (infra_timeout_s, SFTFLOW_INFRA_TIMEOUT_S: "
            f"the job's Cloud Run timeout / Vertex AI maximum_run_time_hours) but it needs {need:.0f} s ({how}): raise "
            "the deployment's timeout and maximum_run_time_hours and SFTFLOW_INFRA_TIMEOUT_S with them, lower "
            "tuning_timeout, or use wait_mode suspend")
