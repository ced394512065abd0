"""Suspending a run while its tuning job trains (`wait_mode=suspend`), and which suspended runs to resume.

A deployment run that suspends for a job names the job in the suspension's pause key (`Suspension.key`):
the tuning intent, the job, the moment `tuning_timeout` runs out for it (its deadline) and a counter. The
run's process exits; nothing polls. The resumer (flows/resume.py, a scheduled deployment) reads the key of
every suspended run, asks the backend for the job's state and resumes (`decide`) the runs whose job has
ended, whose job is gone, or whose deadline has passed; the resumed run starts from the top, is served from
cache, re-attaches to the job through its intent and polls it once (or, past the deadline, applies
`tuning_timeout` as a polling run does: cancel and confirm, or leave it running).

Prefect fails a suspended run that nobody resumes before its timeout, and a failed run no longer applies
`cancel_job_on_timeout`: so the suspension lasts `SUSPEND_GRACE_S` past the deadline, time for the resumer
to resume it at the deadline. The deadline is set by the run's first suspension for a job and kept by the
next ones (a run resumed early, by hand, suspends again with the same deadline), so the time budget is the
same whether a run polls or sleeps. Plain functions: the Prefect calls are in tasks/resume.py and flows/.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from sftflow.backends.base import JobState, Tuner
from sftflow.errors import BackendError, TransientError
from sftflow.tuning.polling import job_gone

#: What begins the pause key of a suspension for a tuning job (other suspensions, e.g. for approval, are not ours).
KEY_PREFIX = "sftflow-tuning"
#: Seconds a suspension outlives its deadline: the resumer's chance to resume it so that the run applies
#: tuning_timeout (Prefect fails a suspension that times out, and the job would keep billing).
SUSPEND_GRACE_S = 900.0


@dataclass(frozen=True)
class Suspension:
    """One suspension of a run for tuning job `job` of intent `intent`; `deadline`: epoch seconds when
    `tuning_timeout` runs out for that job; `n`: how many suspensions for it came before."""

    intent: str
    job: str
    deadline: float
    n: int = 0

    @property
    def key(self) -> str:
        """The pause key (job names hold no '|')."""
        return f"{KEY_PREFIX}|{self.intent}|{self.deadline:.0f}|{self.n}|{self.job}"

    @classmethod
    def parse(cls, key: str | None) -> Suspension | None:
        """The suspension a pause key names, or None for any other key (not a tuning suspension)."""
        parts = (key or "").split("|", 4)
        if len(parts) != 5 or parts[0] != KEY_PREFIX or not parts[1] or not parts[4]:
            return None
        try:
            return cls(intent=parts[1], job=parts[4], deadline=float(parts[2]), n=int(parts[3]))
        except ValueError:
            return None


def _earlier(intent: str, job: str, pause_keys: Iterable[str]) -> list[Suspension]:
    found = (Suspension.parse(k) for k in pause_keys or ())
    return [s for s in found if s is not None and s.intent == intent and s.job == job]


def next_suspension(intent: str, job: str, pause_keys: Iterable[str], *, tuning_timeout: float,
                    now: float) -> Suspension:
    """The suspension a run whose earlier pause keys are `pause_keys` makes for `job` now: a fresh key (Prefect
    refuses a key twice), the deadline of its first suspension for this job, else `now + tuning_timeout`."""
    earlier = _earlier(intent, job, pause_keys)
    deadline = min((s.deadline for s in earlier), default=now + tuning_timeout)
    return Suspension(intent=intent, job=job, deadline=deadline, n=max((s.n for s in earlier), default=-1) + 1)


def already_waited(intent: str, job: str, pause_keys: Iterable[str], *, tuning_timeout: float, now: float) -> float:
    """Seconds of `tuning_timeout` a run already spent suspended for `job` (0 when it never suspended for it):
    its polling continues the same budget instead of starting a new one."""
    earlier = _earlier(intent, job, pause_keys)
    if not earlier:
        return 0.0
    deadline = min(s.deadline for s in earlier)
    return max(0.0, tuning_timeout - (deadline - now))


def suspend_timeout(suspension: Suspension, now: float) -> int:
    """Seconds Prefect keeps the run suspended: to the deadline, plus the resumer's grace."""
    return max(1, math.ceil(suspension.deadline - now + SUSPEND_GRACE_S))


def subflow_pause_timeout(root_timeout: int) -> int:
    """Seconds a subflow stays Paused while its root is suspended (it suspended from the subflow): the root's
    suspension plus an hour for the resumed root to reach the subflow again (steps before it come from cache)."""
    return root_timeout + 3600


@dataclass(frozen=True)
class JobLook:
    """What the resumer learnt of a job: its state, or `gone` (the backend says it does not exist), or
    `error` (it could not tell: a transient fault, no credentials)."""

    state: JobState | None = None
    gone: bool = False
    error: str | None = None


def look_at_job(tuner: Tuner, name: str) -> JobLook:
    """One poll of `name`; never raises for what a poll may meet (a fault is `error`, a 404 is `gone`)."""
    try:
        return JobLook(state=tuner.get(name).state)
    except TransientError as exc:
        return JobLook(error=f"transient: {exc}")
    except (BackendError, FileNotFoundError) as exc:
        if job_gone(exc):
            return JobLook(gone=True)
        return JobLook(error=str(exc))


@dataclass(frozen=True)
class Decision:
    """Resume the run or leave it suspended, and why (one line for the resumer's log and artifact)."""

    resume: bool
    reason: str


def decide(suspension: Suspension | None, look: JobLook | None, *, now: float) -> Decision:
    """Whether a run suspended with `suspension` (None: not suspended for a tuning job) is to be resumed now,
    given what `look` says of its job (None: not looked at)."""
    if suspension is None:
        return Decision(False, "not suspended for a tuning job (another pause key): left alone")
    job = suspension.job
    if look is not None and look.state is not None and look.state.ended:
        return Decision(True, f"job {job} ended {look.state.value}")
    if look is not None and look.gone:
        return Decision(True, f"job {job} no longer exists: the run decides again (re-attach, or report it)")
    if now >= suspension.deadline:
        state = look.state.value if look is not None and look.state is not None else "in an unknown state"
        return Decision(True, f"tuning_timeout ran out for job {job} (still {state}): the resumed run applies "
                              "it (cancel_job_on_timeout)")
    if look is None or look.error is not None:
        why = look.error if look is not None else "not looked at"
        return Decision(False, f"job {job}: state unknown ({why}); asked again at the next tick")
    return Decision(False, f"job {job} still {look.state.value if look.state else '?'}; tuning_timeout runs out in "
                           f"{suspension.deadline - now:.0f} s")


# ------------------------------------------------------------------------------------------ watching
# One resumer run watches for `watch_s` seconds, a pass every `period_s`, so that the time from a job's end to
# its run's resumption is one period plus the pass (a poll), not a fresh process per tick (pull step, Prefect
# import: 26.6 s measured with a 15 s schedule). The deployment's schedule starts one run a little before the
# previous one stops watching, so one is always watching.


def watch_until(scheduled: float | None, now: float, watch_s: float) -> float:
    """Epoch seconds when a resumer run scheduled for `scheduled` (None: now) stops watching: `watch_s` after its
    scheduled start, so that a run that starts late (its worker was down) only watches what is left of its turn
    and late runs never pile up; never before `now` (every run makes one pass)."""
    start = now if scheduled is None else scheduled
    return max(now, start + max(0.0, watch_s))


def next_pass_in(began: float, now: float, *, period_s: float, stop_at: float) -> float | None:
    """Seconds to sleep before the next pass of a resumer run whose last pass began at `began`; None: stop (the
    next pass would begin after `stop_at`, the next scheduled run's turn)."""
    due = began + max(0.0, period_s)
    if due > stop_at:
        return None
    return max(0.0, due - now)


# ------------------------------------------------------------------------- cancelled while suspended
#: States a cancelled run passes through (Prefect turns Cancelling into Cancelled at once for a suspended run:
#: it has no process; https://github.com/PrefectHQ/prefect/blob/3.9.1/src/prefect/server/orchestration/core_policy.py
#: BypassCancellingFlowRunsWithNoInfra).
CANCELLED_STATES = ("Cancelling", "Cancelled")
#: The tag the resumer puts on a cancelled run once it has handled it (its job cancelled, or none to cancel).
CANCEL_CHECKED_TAG = "sftflow-cancel-checked"
#: The tag added when it did cancel the job.
JOB_CANCELLED_TAG = "sftflow-job-cancelled"
#: How far back the resumer looks for runs cancelled while suspended (seconds).
CANCEL_LOOKBACK_S = 7 * 86400.0


def cancelled_while_suspended(history: Iterable[tuple[str, str | None]]) -> Suspension | None:
    """The tuning suspension a run was cancelled in, whose job is then to be cancelled too; None otherwise.

    `history`: the run's states as (name, pause key), oldest first, the last its current one. A run cancelled while
    Suspended for a tuning job (or Resuming from it, before its process started) has no process to cancel the job
    (no on_cancellation hook runs: nothing runs): the resumer does. A run cancelled while its process ran applied
    cancel_job_on_interrupt itself, and a run suspended for anything else (approval) has no job."""
    names = list(history)
    if not names or names[-1][0] not in CANCELLED_STATES:
        return None
    i = len(names) - 1
    while i > 0 and names[i - 1][0] in CANCELLED_STATES:
        i -= 1
    before = i - 1
    if before >= 0 and names[before][0] == "Resuming":
        before -= 1
    if before < 0 or names[before][0] != "Suspended":
        return None
    return Suspension.parse(names[before][1])


@dataclass(frozen=True)
class CancelDecision:
    """What the resumer does for a run cancelled while suspended: `cancel` its job, `done` (nothing to cancel;
    recorded on the run so that no later pass looks again), or `later` (the job's state is unknown)."""

    action: str
    reason: str


def decide_cancel(job: str, look: JobLook) -> CancelDecision:
    """Whether to cancel `job`, that of a run cancelled while suspended, given one look at it."""
    if look.state is not None and (look.state.ended or look.state is JobState.CANCELLING):
        return CancelDecision("done", f"job {job} already {look.state.value}: nothing to cancel")
    if look.gone:
        return CancelDecision("done", f"job {job} no longer exists: nothing to cancel")
    if look.error is not None or look.state is None:
        return CancelDecision("later", f"job {job}: state unknown ({look.error}); asked again at the next pass")
    return CancelDecision("cancel", f"the run was cancelled while suspended and job {job} is still "
                                    f"{look.state.value}: cancelling it")
