"""wait_mode=suspend, the plain part (sftflow/tuning/resume.py): pause keys, deadlines kept across
suspensions, and which suspended runs the resumer resumes. No Prefect, no server (the deployment run
through a worker is tests/test_suspend.py)."""

from __future__ import annotations

import pytest

from sftflow.backends.base import JobState, JobStatus
from sftflow.errors import BackendError, TransientError
from sftflow.tuning.polling import JobTimeout, await_job
from sftflow.tuning.resume import (
    SUSPEND_GRACE_S,
    JobLook,
    Suspension,
    already_waited,
    cancelled_while_suspended,
    decide,
    decide_cancel,
    look_at_job,
    next_pass_in,
    next_suspension,
    subflow_pause_timeout,
    suspend_timeout,
    watch_until,
)

JOB = "projects/p/locations/us-central1/tuningJobs/123"
T0 = 1_800_000_000.0


def test_pause_key_round_trips_and_other_keys_are_not_ours():
    s = Suspension(intent="k0123456789abcdef0123", job=JOB, deadline=T0 + 3600, n=2)
    assert Suspension.parse(s.key) == s
    for other in (None, "", "approve-k0123", "1", "sftflow-tuning|k1|notanumber|0|job", "sftflow-tuning|k1|5|0|",
                  "sftflow-tuning||5|0|job", "sftflow-tuning|k1|5|job"):
        assert Suspension.parse(other) is None, other


def test_first_suspension_sets_the_deadline_and_later_ones_keep_it():
    first = next_suspension("k1", JOB, set(), tuning_timeout=14400, now=T0)
    assert (first.deadline, first.n) == (T0 + 14400, 0)
    # resumed early (by hand) 1000 s later: a fresh key, the same deadline
    again = next_suspension("k1", JOB, {first.key, "approve-k1"}, tuning_timeout=14400, now=T0 + 1000)
    assert (again.deadline, again.n) == (T0 + 14400, 1) and again.key != first.key
    # another job (resubmitted after a failure) starts its own budget
    other = next_suspension("k1", "job-2", {first.key, again.key}, tuning_timeout=14400, now=T0 + 2000)
    assert (other.deadline, other.n) == (T0 + 2000 + 14400, 0)


def test_already_waited_continues_the_jobs_budget():
    first = next_suspension("k1", JOB, set(), tuning_timeout=600, now=T0)
    assert already_waited("k1", JOB, set(), tuning_timeout=600, now=T0 + 500) == 0.0
    assert already_waited("k1", JOB, {first.key}, tuning_timeout=600, now=T0 + 500) == pytest.approx(500, abs=1)
    assert already_waited("k1", "job-2", {first.key}, tuning_timeout=600, now=T0 + 500) == 0.0


def test_the_suspension_outlives_the_deadline_by_the_grace():
    s = next_suspension("k1", JOB, set(), tuning_timeout=600, now=T0)
    assert suspend_timeout(s, T0) == 600 + SUSPEND_GRACE_S
    assert suspend_timeout(s, T0 + 10_000) == 1  # never 0 or negative: Prefect refuses that


@pytest.mark.parametrize("state", ["SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED", "PARTIALLY_SUCCEEDED", "PAUSED"])
def test_a_run_whose_job_ended_is_resumed(state):
    s = Suspension("k1", JOB, deadline=T0 + 3600)
    d = decide(s, JobLook(state=JobState(state)), now=T0)
    assert d.resume and f"ended {state}" in d.reason


@pytest.mark.parametrize("state", ["PENDING", "RUNNING", "CANCELLING"])
def test_a_run_whose_job_still_trains_is_left_until_the_deadline(state):
    s = Suspension("k1", JOB, deadline=T0 + 3600)
    d = decide(s, JobLook(state=JobState(state)), now=T0)
    assert not d.resume and "3600 s" in d.reason
    late = decide(s, JobLook(state=JobState(state)), now=T0 + 3600)
    assert late.resume and "tuning_timeout ran out" in late.reason and state in late.reason


def test_unknown_state_waits_for_the_next_tick_but_not_past_the_deadline():
    s = Suspension("k1", JOB, deadline=T0 + 60)
    assert not decide(s, JobLook(error="transient: 503"), now=T0).resume
    assert not decide(s, None, now=T0).resume
    assert decide(s, JobLook(error="transient: 503"), now=T0 + 61).resume  # the run applies tuning_timeout itself


def test_a_gone_job_resumes_and_other_suspensions_are_left_alone():
    s = Suspension("k1", JOB, deadline=T0 + 3600)
    assert decide(s, JobLook(gone=True), now=T0).resume
    other = decide(None, None, now=T0)
    assert not other.resume and "not suspended for a tuning job" in other.reason


class _Tuner:
    def __init__(self, outcome):
        self.outcome = outcome

    def get(self, name):
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return JobStatus(name=name, state=self.outcome)


class _Http404(Exception):
    code = 404


def test_look_at_job_never_raises_for_what_a_poll_meets():
    assert look_at_job(_Tuner(JobState.RUNNING), JOB) == JobLook(state=JobState.RUNNING)
    assert look_at_job(_Tuner(TransientError("503")), JOB).error.startswith("transient")
    gone = BackendError("not found")
    gone.__cause__ = _Http404()
    assert look_at_job(_Tuner(gone), JOB) == JobLook(gone=True)
    assert look_at_job(_Tuner(BackendError("403 denied")), JOB).error == "403 denied"


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def test_a_resumed_run_past_its_deadline_applies_tuning_timeout_at_its_first_poll():
    """The time slept counts: a run resumed at its deadline cancels the job at once (polling.py's policy)."""
    clock, cancels = _Clock(), []

    class Running(_Tuner):
        def cancel(self, name):
            cancels.append(name)
            self.outcome = JobState.CANCELLED

    tuner = Running(JobState.RUNNING)
    with pytest.raises(JobTimeout, match=r"cancelled after 600 s \(tuning timeout\)"):
        await_job(tuner, JOB, poll_interval=30, timeout=600, cancel_on_timeout=True, sleep=clock.sleep, clock=clock,
                  already_waited=600)
    assert cancels == [JOB]
    tuner = _Tuner(JobState.RUNNING)
    with pytest.raises(JobTimeout, match="left running"):
        await_job(tuner, JOB, poll_interval=30, timeout=600, sleep=clock.sleep, clock=clock, already_waited=700)
    # with budget left, it polls on for the rest only
    start = clock.t
    with pytest.raises(JobTimeout):
        await_job(_Tuner(JobState.RUNNING), JOB, poll_interval=30, timeout=600, sleep=clock.sleep, clock=clock,
                  already_waited=540)
    assert clock.t - start == pytest.approx(60)


def test_cli_resume_finished_without_a_server_is_one_line(tmp_path, capsys):
    from sftflow.cli.main import main

    assert main(["resume-finished", "--local-root", str(tmp_path), "--set", "prefect_server=ephemeral"]) == 1
    err = capsys.readouterr().err
    assert "sftflow: error: resume-finished: no Prefect server is running here" in err
    assert "Traceback" not in err


# ------------------------------------------------------------------------------ the watching resumer
def _passes(scheduled: float, started: float, *, watch_s: float, period_s: float, pass_s: float = 1.0) -> list[float]:
    """When a resumer run scheduled at `scheduled` and started at `started` begins its passes (each takes pass_s)."""
    now, stop_at, out = started, watch_until(scheduled, started, watch_s), []
    while True:
        out.append(now)
        now += pass_s
        pause = next_pass_in(out[-1], now, period_s=period_s, stop_at=stop_at)
        if pause is None:
            return out
        now += pause


def _shipped_resumer() -> tuple[float, float, float]:
    from pathlib import Path

    import yaml

    [dep] = [d for d in yaml.safe_load((Path(__file__).resolve().parents[1] / "prefect.yaml").read_text())["deployments"]
             if d["entrypoint"] == "flows/resume.py:resume_finished"]
    [schedule] = dep["schedules"]
    return schedule["interval"], dep["parameters"]["watch_s"], dep["parameters"]["period_s"]


@pytest.mark.parametrize("startup_s", [2.0, 12.0, 25.0, 50.0])
def test_one_shipped_resumer_run_is_always_watching_so_a_job_end_waits_at_most_one_period(startup_s):
    """prefect.yaml's schedule and watch: runs started `startup_s` after their scheduled time (pull step, Prefect
    import) overlap, so passes never lie more than one period apart: a job that ends at any moment is seen by
    the next pass, within period_s (the run's own poll then follows)."""
    interval, watch_s, period_s = _shipped_resumer()
    assert watch_s > interval and period_s <= 60
    passes = sorted(t for k in range(4) for t in _passes(k * interval, k * interval + startup_s, watch_s=watch_s,
                                                         period_s=period_s))
    gaps = [b - a for a, b in zip(passes, passes[1:])]
    assert max(gaps) <= period_s, max(gaps)
    assert passes[-1] >= 3 * interval + watch_s - period_s  # each run watches to the end of its turn


def test_a_late_resumer_run_makes_one_pass_and_a_one_off_run_too():
    """A run that starts after its turn (its worker was down: late runs start together) makes one pass and stops,
    so late runs never pile up; watch_s 0 (`sftflow resume-finished`) is one pass."""
    assert _passes(0.0, 700.0, watch_s=630, period_s=30) == [700.0]
    assert _passes(0.0, 610.0, watch_s=630, period_s=30) == [610.0]  # 20 s left: the next pass would be past it
    assert _passes(T0, T0, watch_s=0, period_s=30) == [T0]
    assert watch_until(None, T0, 60) == T0 + 60
    assert next_pass_in(T0, T0 + 40, period_s=30, stop_at=T0 + 600) == 0.0  # a slow pass: the next one at once


# -------------------------------------------------------------------- a run cancelled while suspended
KEY = Suspension("k1", JOB, deadline=T0 + 3600).key


@pytest.mark.parametrize("history, expected", [
    ([("Running", None), ("Suspended", KEY), ("Cancelled", None)], JOB),  # Prefect's path: no process, no Cancelling
    ([("Running", None), ("Suspended", KEY), ("Cancelling", None)], JOB),
    ([("Suspended", KEY), ("Cancelling", None), ("Cancelled", None)], JOB),
    ([("Suspended", KEY), ("Resuming", None), ("Cancelled", None)], JOB),  # resumed, cancelled before it started
    ([("Suspended", KEY), ("Resuming", None), ("Running", None), ("Cancelling", None), ("Cancelled", None)], None),
    ([("Running", None), ("Cancelling", None), ("Cancelled", None)], None),  # its process cancelled the job
    ([("Running", None), ("Suspended", "approve-k1"), ("Cancelled", None)], None),  # an approval: no job yet
    ([("Running", None), ("Suspended", KEY)], None),  # not cancelled
    ([], None),
])
def test_the_job_of_a_run_cancelled_while_suspended_is_the_one_its_pause_key_names(history, expected):
    found = cancelled_while_suspended(history)
    assert (found.job if found else None) == expected


@pytest.mark.parametrize("look, action", [
    (JobLook(state=JobState.RUNNING), "cancel"),
    (JobLook(state=JobState.PENDING), "cancel"),
    (JobLook(state=JobState.CANCELLING), "done"),
    (JobLook(state=JobState.SUCCEEDED), "done"),
    (JobLook(state=JobState.CANCELLED), "done"),  # a second pass after the cancel: nothing more
    (JobLook(gone=True), "done"),
    (JobLook(error="transient: 503"), "later"),
])
def test_the_job_is_cancelled_only_while_it_still_runs(look, action):
    d = decide_cancel(JOB, look)
    assert d.action == action and JOB in d.reason


def test_a_subflow_paused_with_its_root_outlives_the_roots_suspension():
    assert subflow_pause_timeout(600) > 600
