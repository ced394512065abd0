"""Backend-neutral tuning logic: intent keys, attach-or-submit, polling to the end."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from sftflow.backends.base import JobState, JobStatus, TuningSpec
from sftflow.errors import TransientError
from sftflow.backends.vertex import VertexTuner
from sftflow.tuning import JobFailed, JobTimeout, await_job, ensure_job, tuning_key

HASHES = {"train": "md5:aaa", "val": "md5:bbb"}
FIELDS = dict(base_model="gemini-2.5-flash", epochs=1, adapter_size=4, learning_rate_multiplier=1.0, run_name="r1")


@pytest.fixture
def spec(tuning_datasets):
    """`spec(key)` → a TuningSpec on datasets that exist in the GCS emulator (Vertex checks them)."""

    def make(key: str) -> TuningSpec:
        return TuningSpec("gemini-2.5-flash", tuning_datasets["train"], tuning_datasets["val"], 1, 4, 1.0, "tuned", key)

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


# ------------------------------------------------------------------------------ keys


def test_tuning_key_is_stable_label_safe_and_sensitive():
    key = tuning_key(HASHES, **FIELDS)
    assert re.fullmatch(r"k[0-9a-f]{20}", key)
    assert key == tuning_key(dict(reversed(HASHES.items())), **{**FIELDS, "learning_rate_multiplier": 1})
    changed = [
        tuning_key({**HASHES, "train": "md5:zzz"}, **FIELDS),
        tuning_key({"train": "md5:aaa"}, **FIELDS),
        *(tuning_key(HASHES, **{**FIELDS, k: v}) for k, v in
          [("base_model", "gemini-2.0"), ("epochs", 2), ("adapter_size", 8),
           ("learning_rate_multiplier", 0.5), ("run_name", "r2")]),
        tuning_key(HASHES, **FIELDS, seed=1),
    ]
    assert len({key, *changed}) == len(changed) + 1


# ------------------------------------------------------------------------------ ensure_job


def test_ensure_job_attaches_instead_of_creating(spec, make_vertex_server, vertex_settings_for):
    server = make_vertex_server(job_phases=(5.0, 5.0))
    tuner = VertexTuner(vertex_settings_for(server))
    events = []
    name, attached = ensure_job(tuner, spec("kone"), on_event=lambda kind, info: events.append((kind, info)))
    assert not attached
    again, attached = ensure_job(tuner, spec("kone"), on_event=lambda kind, info: events.append((kind, info)))
    assert (again, attached) == (name, True)
    other, attached = ensure_job(tuner, spec("ktwo"))
    assert other != name and not attached
    assert server.count("POST", "/tuningJobs") == 2  # one per key, none for the re-run
    assert [k for k, _ in events] == ["submitted", "attached"] and events[1][1]["state"] == "PENDING"


def test_ensure_job_refuses_to_resubmit_failed_unless_asked(spec, make_vertex_server, vertex_settings_for):
    server = make_vertex_server(job_phases=(0.0, 0.0), job_outcome="FAILED")
    tuner = VertexTuner(vertex_settings_for(server))
    failed = tuner.submit(spec("kone"))
    with pytest.raises(JobFailed) as err:
        ensure_job(tuner, spec("kone"))
    assert err.value.status.name == failed
    assert "Dataset row 3: invalid role" in str(err.value) and "resubmit_failed" in str(err.value)
    assert server.count("POST", "/tuningJobs") == 1
    events = []
    name, attached = ensure_job(tuner, spec("kone"), resubmit_failed=True, on_event=lambda k, i: events.append(k))
    assert name != failed and not attached and events == ["resubmitting", "submitted"]
    assert server.count("POST", "/tuningJobs") == 2


def test_rerun_while_the_job_is_still_cancelling(spec, make_vertex_server, vertex_settings_for):
    """Ctrl-C then an immediate rerun: Vertex still shows the job CANCELLING. It is not attached to
    (it will never produce a model) and not silently paid for again: as for a CANCELLED job."""
    server = make_vertex_server(job_phases=(30.0, 30.0), cancel_delay_s=30.0)
    tuner = VertexTuner(vertex_settings_for(server))
    name, _ = ensure_job(tuner, spec("kone"))
    tuner.cancel(name)
    with pytest.raises(JobFailed, match=f"tuning job {re.escape(name)} is CANCELLING.*resubmit_failed") as err:
        ensure_job(tuner, spec("kone"))
    assert err.value.status.state is JobState.CANCELLING
    again, attached = ensure_job(tuner, spec("kone"), resubmit_failed=True)
    assert again != name and not attached and len(server.job_names) == 2


def test_await_job_polls_through_cancelling_to_cancelled(spec, make_vertex_server, vertex_settings_for):
    server = make_vertex_server(job_phases=(30.0, 30.0), cancel_delay_s=2.0)
    tuner = VertexTuner(vertex_settings_for(server))
    name = tuner.submit(spec("kone"))
    tuner.cancel(name)
    updates = []
    with pytest.raises(JobFailed, match="ended CANCELLED: CANCELED"):
        await_job(tuner, name, poll_interval=0.05, timeout=30, on_update=lambda s, e: updates.append(s.state))
    assert updates[0] is JobState.CANCELLING and updates[-1] is JobState.CANCELLED


# ------------------------------------------------------------------------------ await_job


def test_await_job_succeeds_through_50pct_polling_faults(spec, make_vertex_server, vertex_settings_for):
    server = make_vertex_server(job_phases=(0.3, 0.6), seed=3)
    tuner = VertexTuner(vertex_settings_for(server))
    name = tuner.submit(spec("kone"))
    server.set_faults(0.5, (503,))
    updates = []
    status = await_job(tuner, name, poll_interval=0.05, timeout=10,
                       on_update=lambda s, elapsed: updates.append((s.state, elapsed)))
    assert status.state is JobState.SUCCEEDED and status.endpoint
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


def test_job_failed_message_without_error():
    status = replace(JobStatus(name="j", state=JobState.CANCELLED), console_url="https://x")
    assert str(JobFailed(status)) == "tuning job j ended CANCELLED (console: https://x)"


def test_build_spec_key_follows_every_tuning_input(tmp_path):
    """The flow's intent key changes with each input that changes what tuning produces — the seed
    included (it drives the local backend's training) — and with nothing else."""
    from flows.tune import build_spec
    from sftflow.config import Settings

    train, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    train.write_text('{"contents": []}\n')
    val.write_text('{"contents": [1]}\n')
    base = Settings(_env_file=None, local_root=str(tmp_path / "root"))

    def key(**changes) -> str:
        return build_spec(base.model_copy(update=changes), str(train), str(val)).key

    same = key()
    assert same == key() == key(poll_interval=1.0, concurrency=3)  # not tuning inputs
    changed = [key(seed=base.seed + 1), key(epochs=base.epochs + 1), key(adapter_size=16),
               key(learning_rate_multiplier=0.25), key(source_model="other-model"), key(run_name="other"),
               key(tuned_model_display_name="other-name")]
    assert len({same, *changed}) == len(changed) + 1
    assert build_spec(base.model_copy(update={"seed": 7}), str(train), str(val)).seed == 7
