"""Backend-neutral tuning logic: intent keys, attach-or-submit (waiting for the job: test_polling.py)."""

from __future__ import annotations

import logging
import re
from dataclasses import replace

import pytest

from sftflow.backends.base import JobState, JobStatus, TuningSpec
from sftflow.tuning.hyperparameters import Hyperparameters
from sftflow.backends.vertex import VertexTuner
from sftflow.tuning.intent import JobFailed, ensure_job, tuning_key

HASHES = {"train": "md5:aaa", "val": "md5:bbb"}
FIELDS = dict(base_model="gemini-2.5-flash", hyperparameters=Hyperparameters(), run_name="r1", display_name="d", seed=0)


@pytest.fixture
def spec(tuning_datasets):
    """`spec(key)` → a TuningSpec on datasets that exist in the GCS emulator (Vertex checks them)."""

    def make(key: str) -> TuningSpec:
        return TuningSpec("gemini-2.5-flash", tuning_datasets["train"], tuning_datasets["val"],
                          Hyperparameters(1, 4, 1.0), "tuned", key)

    return make


# ------------------------------------------------------------------------------ keys


def test_tuning_key_is_stable_label_safe_and_sensitive():
    key = tuning_key(HASHES, **FIELDS)
    assert re.fullmatch(r"k[0-9a-f]{20}", key)
    assert key == tuning_key(dict(reversed(HASHES.items())),
                             **{**FIELDS, "hyperparameters": Hyperparameters(learning_rate_multiplier=1)})
    changed = [
        tuning_key({**HASHES, "train": "md5:zzz"}, **FIELDS),
        tuning_key({"train": "md5:aaa"}, **FIELDS),
        *(tuning_key(HASHES, **{**FIELDS, k: v}) for k, v in
          [("base_model", "gemini-2.0"), ("hyperparameters", Hyperparameters(epochs=2)),
           ("hyperparameters", Hyperparameters(adapter_size=8)),
           ("hyperparameters", Hyperparameters(learning_rate_multiplier=0.5)), ("run_name", "r2"),
           ("display_name", "e"), ("seed", 1)]),
    ]
    assert len({key, *changed}) == len(changed) + 1


# ------------------------------------------------------------------------------ ensure_job


def test_ensure_job_attaches_instead_of_creating(spec, make_vertex_server, vertex_settings_for, caplog):
    server = make_vertex_server(job_phases=(5.0, 5.0))
    tuner = VertexTuner(vertex_settings_for(server))
    caplog.set_level(logging.INFO, logger="sftflow.tuning.intent")
    name, attached = ensure_job(tuner, spec("kone"))
    assert not attached
    again, attached = ensure_job(tuner, spec("kone"))
    assert (again, attached) == (name, True)
    other, attached = ensure_job(tuner, spec("ktwo"))
    assert other != name and not attached
    assert server.count("POST", "/tuningJobs") == 2  # one per key, none for the re-run
    assert [r.getMessage() for r in caplog.records if r.name == "sftflow.tuning.intent"][:2] == [
        f"submitted job {name} for key kone", f"attaching to tuning job {name} (PENDING) for key kone"]


def test_ensure_job_refuses_to_resubmit_failed_unless_asked(spec, make_vertex_server, vertex_settings_for):
    server = make_vertex_server(job_phases=(0.0, 0.0), job_outcome="FAILED")
    tuner = VertexTuner(vertex_settings_for(server))
    failed = tuner.submit(spec("kone"))
    with pytest.raises(JobFailed) as err:
        ensure_job(tuner, spec("kone"))
    assert err.value.status.name == failed
    assert "Dataset row 3: invalid role" in str(err.value) and "resubmit_failed" in str(err.value)
    assert server.count("POST", "/tuningJobs") == 1
    name, attached = ensure_job(tuner, spec("kone"), resubmit_failed=True)
    assert name != failed and not attached
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


def test_job_failed_message_without_error():
    status = replace(JobStatus(name="j", state=JobState.CANCELLED), console_url="https://x")
    assert str(JobFailed(status)) == "tuning job j ended CANCELLED (console: https://x)"


def test_build_spec_key_follows_every_tuning_input(tmp_path):
    """The flow's intent key changes with each input that changes what tuning produces — the seed
    included (it drives the local backend's training) — and with nothing else."""
    from sftflow.tuning.plan import build_spec
    from sftflow.tuning.setup import TuningSetup
    from sftflow.config import Settings

    train, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    train.write_text('{"contents": []}\n')
    val.write_text('{"contents": [1]}\n')
    base = Settings(_env_file=None, local_root=str(tmp_path / "root"))

    def key(**changes) -> str:
        return build_spec(TuningSetup.from_settings(base.model_copy(update=changes)), str(train), str(val)).key

    same = key()
    assert same == key() == key(poll_interval=1.0, concurrency=3)  # not tuning inputs
    changed = [key(seed=base.seed + 1), key(epochs=base.epochs + 1), key(adapter_size=16),
               key(learning_rate_multiplier=0.25), key(source_model="other-model"), key(run_name="other"),
               key(tuned_model_display_name="other-name")]
    assert len({same, *changed}) == len(changed) + 1
    assert build_spec(TuningSetup.from_settings(base.model_copy(update={"seed": 7})), str(train), str(val)).seed == 7


def test_every_tuning_setup_field_is_in_the_key_or_says_why_not(tmp_path):
    """A field added to TuningSetup (what tuning tasks take instead of Settings) is either in the intent key or
    marked not_in_key with its reason: one neither in the key nor marked fails here."""
    import dataclasses
    from pathlib import Path

    from pydantic import SecretStr

    from sftflow.config import Settings
    from sftflow.tuning.plan import build_spec
    from sftflow.tuning.setup import TuningSetup

    train = tmp_path / "train.jsonl"
    train.write_text('{"contents": []}\n')
    setup = TuningSetup.from_settings(Settings(_env_file=None, backend="vertex", project="p", bucket="gs://b"))
    in_key = {f.name for f in dataclasses.fields(TuningSetup) if f.metadata.get("in_key", True)}
    assert in_key == {"run_name", "base_model", "hyperparameters", "tuned_model_display_name", "seed"}
    assert all(f.metadata.get("why") for f in dataclasses.fields(TuningSetup) if f.name not in in_key)
    k0 = build_spec(setup, str(train), None).key
    for f in dataclasses.fields(TuningSetup):
        value = getattr(setup, f.name)
        if f.name == "hyperparameters":
            other = Hyperparameters(epochs=value.epochs + 1)
        elif f.name == "vertex_access_token":
            other = SecretStr("a-token")
        elif isinstance(value, Path):
            other = value / "elsewhere"
        elif isinstance(value, (int, float)):
            other = value + 1
        else:
            other = f"{value}-changed"
        changed = build_spec(dataclasses.replace(setup, **{f.name: other}), str(train), None).key
        assert (changed != k0) == (f.name in in_key), f.name
