"""Waiting for a tuning job: polling to the end through faults, time budgets, every end state."""

from __future__ import annotations

import pytest

from sftflow.backends.base import JobState, JobStatus, TuningSpec
from sftflow.tuning.hyperparameters import Hyperparameters
from sftflow.backends.vertex import VertexTuner
from sftflow.errors import TransientError
from sftflow.tuning.polling import JobTimeout, await_job
from sftflow.tuning.intent import JobFailed


@pytest.fixture
def spec(tuning_datasets):
    """`spec(key)` → a TuningSpec on datasets that exist in the GCS emulator (Vertex checks them)."""

    def make(key: str) -> TuningSpec:
        return TuningSpec("gemini-2.5-flash", tuning_datasets["train"], tuning_datasets["val"],
                          Hyperparameters(1, 4, 1.0), "tuned", key)

    return make


class FakeClock:
    """Sleep that advances a clock instead of waiting, for timing logic without wall time."""

    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s

    def __call__(self) -> float:
        return self.now


class ScriptedTuner:
    """A Tuner whose get() walks through a script of states/exceptions (no SDK involved)."""

    def __init__(self, script):
        self.script, self.gets = list(script), 0

    def get(self, name):
        self.gets += 1
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, Exception):
            raise item
        return JobStatus(name=name, state=item, error="boom" if item is not JobState.SUCCEEDED else None)


def test_await_job_polls_through_cancelling_to_cancelled(spec, make_vertex_server, vertex_settings_for):
    server = make_vertex_server(job_phases=(30.0, 30.0), cancel_delay_s=2.0)
    tuner = VertexTuner(vertex_settings_for(server))
    name = tuner.submit(spec("kone"))
    tuner.cancel(name)
    updates = []
    with pytest.raises(JobFailed, match="ended CANCELLED: CANCELED"):
        await_job(tuner, name, poll_interval=0.05, timeout=30, on_update=lambda s, e: updates.append(s.state))
    assert updates[0] is JobState.CANCELLING and updates[-1] is JobState.CANCELLED


def test_await_job_succeeds_through_50pct_polling_faults(spec, make_vertex_server, vertex_settings_for):
    server = make_vertex_server(job_phases=(0.3, 0.6), seed=3)
    tuner = VertexTuner(vertex_settings_for(server))
    name = tuner.submit(spec("kone"))
    server.set_faults(0.5, (503,))
    updates = []
    status = await_job(tuner, name, poll_interval=0.05, timeout=10,
                       on_update=lambda s, elapsed: updates.append((s.state, elapsed)))
    assert status.state is JobState.SUCCEEDED
    assert status.endpoint.startswith(f"projects/{server.project}/locations/{server.location}/endpoints/")
    polls = [r["status"] for r in server.requests if r["method"] == "GET"]
    assert polls.count(503) >= 3 and polls.count(200) == len(updates)
    assert [s for s, _ in updates][0] in (JobState.PENDING, JobState.RUNNING)
    assert JobState.RUNNING in [s for s, _ in updates]
    assert [e for _, e in updates] == sorted(e for _, e in updates)


def test_await_job_timeout_leaves_job_running(spec, make_vertex_server, vertex_settings_for):
    server = make_vertex_server(job_phases=(30.0, 30.0))
    tuner = VertexTuner(vertex_settings_for(server))
    name = tuner.submit(spec("kone"))
    with pytest.raises(JobTimeout) as err:
        await_job(tuner, name, poll_interval=0.05, timeout=0.3)
    assert name in str(err.value) and "left running" in str(err.value)
    assert err.value.status.state is JobState.PENDING
    assert server.count("POST", ":cancel") == 0 and tuner.get(name).state is JobState.PENDING


def test_await_job_failed_carries_service_message(spec, make_vertex_server, vertex_settings_for):
    server = make_vertex_server(job_phases=(0.0, 0.1), job_outcome="FAILED")
    tuner = VertexTuner(vertex_settings_for(server))
    name = tuner.submit(spec("kone"))
    with pytest.raises(JobFailed, match="FAILED: Dataset row 3: invalid role") as err:
        await_job(tuner, name, poll_interval=0.05, timeout=5)
    assert err.value.status.name == name and name in str(err.value)


@pytest.mark.parametrize("end", [JobState.CANCELLED, JobState.EXPIRED, JobState.PAUSED,
                                 JobState.PARTIALLY_SUCCEEDED, JobState.FAILED])
def test_every_unsuccessful_end_state_raises(end):
    clock = FakeClock()
    tuner = ScriptedTuner([JobState.PENDING, JobState.RUNNING, end])
    with pytest.raises(JobFailed, match=f"ended {end.value}: boom"):
        await_job(tuner, "job/1", poll_interval=60, timeout=3600, sleep=clock.sleep, clock=clock)
    assert tuner.gets == 3 and clock.sleeps == [60, 60]


def test_transient_backoff_is_capped_and_bounded():
    clock = FakeClock()
    flaky = ScriptedTuner([TransientError("503")] * 6 + [JobState.RUNNING, JobState.SUCCEEDED])
    status = await_job(flaky, "job/1", poll_interval=10, timeout=3600, sleep=clock.sleep, clock=clock)
    assert status.state is JobState.SUCCEEDED
    assert clock.sleeps == [1, 2, 4, 8, 10, 10, 10]
    clock = FakeClock()
    down = ScriptedTuner([TransientError("503")])
    with pytest.raises(TransientError, match=r"job/1 failed 4 times in a row; the job was left running"):
        await_job(down, "job/1", poll_interval=10, timeout=3600, max_transient_failures=3,
                  sleep=clock.sleep, clock=clock)
    assert down.gets == 4


def test_timeout_with_fake_clock_counts_from_start():
    clock = FakeClock()
    tuner = ScriptedTuner([JobState.RUNNING])
    with pytest.raises(JobTimeout, match="still RUNNING after 100s"):
        await_job(tuner, "job/1", poll_interval=30, timeout=100, sleep=clock.sleep, clock=clock)
    assert clock.sleeps == [30, 30, 30, 10]


class CancelRecorder:
    """A job service whose cancel() is recorded, or fails the way an unreachable API does."""

    def __init__(self, fail: Exception | None = None):
        self.cancelled, self.fail = [], fail

    def cancel(self, name):
        if self.fail is not None:
            raise self.fail
        self.cancelled.append(name)


@pytest.mark.parametrize("kind", ["tuning job", "batch job"])
def test_an_interrupt_cancels_the_job_or_leaves_it_as_configured_and_never_raises(kind, caplog):
    from sftflow.tuning.polling import cancel_on_interrupt

    jobs = CancelRecorder()
    cancel_on_interrupt(jobs, "jobs/1", enabled=True, kind=kind)
    assert jobs.cancelled == ["jobs/1"]
    assert f"interrupted: cancelling {kind} jobs/1 (cancel_job_on_interrupt=true)" in caplog.text

    jobs = CancelRecorder()
    cancel_on_interrupt(jobs, "jobs/2", enabled=False, kind=kind)
    assert jobs.cancelled == []
    assert f"interrupted: {kind} jobs/2 keeps running (cancel_job_on_interrupt=false)" in caplog.text

    cancel_on_interrupt(CancelRecorder(fail=TransientError("503 UNAVAILABLE")), "jobs/3", enabled=True, kind=kind)
    failed = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(failed) == 1 and "jobs/3 failed (503 UNAVAILABLE): it may still be running and billing" in failed[0].message
