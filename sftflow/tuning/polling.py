"""Wait for a tuning job to end: poll through transient faults, stop at a time budget, cancel and confirm.

Backend-neutral (any `Tuner`). `sftflow.tuning.intent` decides which job serves an intent; this module
follows that job until it has a tuned model, failed, or ran out of time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

from sftflow.backends.base import JobState, JobStatus, Tuner
from sftflow.errors import BackendError, SftflowError, TransientError
from sftflow.tuning.intent import JobFailed

log = logging.getLogger(__name__)


class JobTimeout(SftflowError, TimeoutError):
    """Waiting for a job exceeded its time budget.

    `cancelled`: None — the job was left running; True — it was cancelled and confirmed stopped;
    False — a cancel was requested but the job was not seen stopping in time.
    """

    def __init__(self, status: JobStatus, elapsed_s: float, timeout_s: float, cancelled: bool | None = None):
        self.status, self.elapsed_s, self.timeout_s, self.cancelled = status, elapsed_s, timeout_s, cancelled
        if cancelled is None:
            msg = (f"tuning job {status.name} still {status.state.value} after {elapsed_s:.0f}s "
                   f"(timeout {timeout_s:.0f}s); the job was left running (cancel_job_on_timeout=false) — "
                   "wait again to attach to it, or cancel it")
        elif cancelled:
            msg = (f"tuning job {status.name} cancelled after {elapsed_s:.0f} s (tuning timeout); "
                   f"final state {status.state.value}. Raise tuning_timeout (--timeout) to wait longer")
        else:
            msg = (f"tuning job {status.name}: cancel requested after {elapsed_s:.0f} s (tuning timeout) but "
                   f"it still reports {status.state.value}; check it in the console")
            if status.console_url:
                msg += f" ({status.console_url})"
        super().__init__(msg)


def transient_backoff(failures: int, poll_interval: float, max_failures: int, what: str,
                      exc: TransientError) -> float:
    """Seconds to wait before polling `what` again after `failures` transient errors in a row (from 1 s,
    doubling, capped at poll_interval); past `max_failures` it raises: the job itself is left running."""
    if failures > max_failures:
        raise TransientError(f"polling {what} failed {failures} times in a row; the job was left running: {exc}") \
            from exc
    return min(poll_interval, 2.0 ** (failures - 1))


def await_job(
    tuner: Tuner,
    name: str,
    *,
    poll_interval: float,
    timeout: float,
    on_update: Callable[[JobStatus, float], None] | None = None,
    max_transient_failures: int = 20,
    cancel_on_timeout: bool = False,
    cancel_confirm_timeout: float = 300.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    already_waited: float = 0.0,
) -> JobStatus:
    """Poll `name` until it ends; return its status if it SUCCEEDED.

    `already_waited`: seconds of `timeout` spent before this call (a run that slept while the job trained,
    `wait_mode=suspend`), so the budget is the job's, not this process's.

    Transient polling errors are retried (backoff from 1 s, capped at poll_interval) up
    to `max_transient_failures` in a row. Raises JobTimeout after `timeout` seconds and
    JobFailed for any other end state (PAUSED and PARTIALLY_SUCCEEDED included: neither
    yields a usable model). On timeout the job keeps running unless `cancel_on_timeout`:
    then it is cancelled and polled until it reports CANCELLED (or is gone), so the meter
    stops (see `cancel_and_confirm`); a job that succeeded meanwhile is returned.
    """

    def timed_out(st: JobStatus, elapsed: float) -> JobTimeout | JobStatus:
        if not cancel_on_timeout:
            return JobTimeout(st, elapsed, timeout)
        log.warning("tuning job %s: timeout after %.0fs; cancelling it (cancel_job_on_timeout=true)", name, elapsed)
        final, stopped = cancel_and_confirm(tuner, name, last=st, poll_interval=min(poll_interval, 5.0),
                                            timeout=cancel_confirm_timeout, sleep=sleep, clock=clock)
        if final.state is JobState.SUCCEEDED:
            return final
        return JobTimeout(final, elapsed, timeout, cancelled=stopped)

    start = clock() - already_waited
    failures = 0
    status: JobStatus | None = None
    while True:
        try:
            status = tuner.get(name)
            failures = 0
        except TransientError as exc:
            failures += 1
            delay = transient_backoff(failures, poll_interval, max_transient_failures, f"tuning job {name}", exc)
            log.warning("polling %s failed (%s); retry %d in %.1fs", name, exc, failures, delay)
            if status is not None and clock() - start + delay > timeout:
                outcome = timed_out(status, clock() - start)
                if isinstance(outcome, JobStatus):
                    return outcome
                raise outcome from exc
            sleep(delay)
            continue
        elapsed = clock() - start
        if on_update is not None:
            on_update(status, elapsed)
        if status.state.ended:
            break
        if elapsed >= timeout:
            outcome = timed_out(status, elapsed)
            if isinstance(outcome, JobStatus):
                return outcome
            raise outcome
        sleep(max(0.0, min(poll_interval, timeout - elapsed)))
    if status.state is JobState.SUCCEEDED:
        return status
    raise JobFailed(status)


def job_gone(exc: BaseException) -> bool:
    """The backend says the job does not exist (HTTP 404 / a deleted local job)."""
    return isinstance(exc, FileNotFoundError) or getattr(exc.__cause__, "code", None) == 404


def cancel_and_confirm(
    tuner: Tuner,
    name: str,
    *,
    last: JobStatus,
    poll_interval: float,
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[JobStatus, bool]:
    """Cancel `name` once and poll until it has stopped: (last status, stopped?).

    Stopped means the job reports an end state (CANCELLED, or one it reached meanwhile) or the
    backend says it is gone. A cancel refused because the job already ended is not an error.
    Transient errors are retried; after `timeout` seconds without an end state: (status, False).
    """
    start = clock()
    status = last
    for attempt in range(5):
        try:
            tuner.cancel(name)
            break
        except TransientError as exc:
            log.warning("cancelling %s failed (%s); retry %d", name, exc, attempt + 1)
            sleep(min(poll_interval, 2.0 ** attempt))
        except BackendError as exc:
            if job_gone(exc):
                return replace(status, state=JobState.CANCELLED), True
            log.warning("cancel of %s refused (%s); checking its state", name, exc)
            break
    while True:
        try:
            status = tuner.get(name)
        except TransientError as exc:
            log.warning("checking cancelled job %s failed (%s)", name, exc)
        except (BackendError, FileNotFoundError) as exc:
            if job_gone(exc):
                log.info("tuning job %s is gone after the cancel", name)
                return replace(status, state=JobState.CANCELLED), True
            raise
        else:
            if status.state.ended:
                log.info("tuning job %s stopped: %s", name, status.state.value)
                return status, True
        if clock() - start >= timeout:
            return status, False
        sleep(poll_interval)


#: What interrupts did to jobs in this process, one line each, for the command line's interrupt line.
INTERRUPTED: list[str] = []
#: What interrupted this process, in those lines: the command line sets "SIGTERM" when that signal came.
INTERRUPT_CAUSE = ["Ctrl-C"]


def cancel_on_interrupt(jobs, name: str, *, enabled: bool, kind: str = "tuning job",
                        logger: logging.Logger | logging.LoggerAdapter = log) -> None:
    """What an interrupt (Ctrl-C, SIGTERM: Prefect's TerminationSignal when a run is cancelled) does to a
    job still running: cancel it so the meter stops, or leave it for a rerun to attach to. Never
    raises, so the interrupt itself still propagates. `logger`: a Prefect run logger shows it in the UI.
    The outcome is also kept in INTERRUPTED (what `sftflow` prints last)."""
    if not enabled:
        logger.warning("interrupted: %s %s keeps running (cancel_job_on_interrupt=false); a rerun attaches to it",
                       kind, name)
        INTERRUPTED.append(f"{kind} {name} keeps running (cancel_job_on_interrupt=false); a rerun attaches to it")
        return
    logger.warning("interrupted: cancelling %s %s (cancel_job_on_interrupt=true)", kind, name)
    try:
        jobs.cancel(name)
    except Exception as exc:  # noqa: BLE001 - the interrupt must still propagate
        logger.error("cancelling %s %s failed (%s): it may still be running and billing; cancel it yourself "
                     "(Google Cloud console) or rerun to attach to it", kind, name, exc)
        INTERRUPTED.append(f"cancelling {kind} {name} failed ({exc}): it may still be running and billing")
        return
    INTERRUPTED.append(f"{kind} {name} cancelled: {INTERRUPT_CAUSE[0]} with cancel_job_on_interrupt=true; "
                       "rerun with --resubmit-failed to start again")
