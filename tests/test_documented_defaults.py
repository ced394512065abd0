"""What later commands take from earlier ones when a flag is left out (README: `prepared.json, tuned.json — what
prepare / tune produced (defaults for later steps)`): `tune` with no --train trains on the prepared data,
`evaluate` with no --test uses the prepared test set, `evaluate --model tuned` the recorded endpoint. The same
functions the flows call, without Prefect; the whole sequence through the CLI is in tests/test_cli_flows.py."""

from __future__ import annotations

import pytest

from flows.evaluate import default_test_uri, resolve_model
from flows.tune import default_datasets
from sftflow.config import Settings
from sftflow.infra import layout
from sftflow.records import PreparedData, TunedModel


def _settings(tmp_path, **kw) -> Settings:
    return Settings(_env_file=None, local_root=tmp_path / "root", **kw)


def _prepare(s: Settings) -> PreparedData:
    prepared = PreparedData(train=f"{s.storage_root}/datasets/train/train-aaa.jsonl",
                            val=f"{s.storage_root}/datasets/val/val-bbb.jsonl",
                            test=f"{s.storage_root}/datasets/test/test-ccc.csv", summaries=(), cost_usd=0.0)
    prepared.write(layout.prepared_uri(s.run_root))
    return prepared


def test_tune_and_evaluate_default_to_what_prepare_made_for_this_run(tmp_path):
    s = _settings(tmp_path)
    with pytest.raises(FileNotFoundError, match="no prepared data for run 'default'; run `sftflow prepare`"):
        default_datasets(s)
    samples_test = default_test_uri(s)
    assert samples_test == s.sources()["test"]  # before prepare: the backend's own data

    prepared = _prepare(s)
    assert default_datasets(s) == (prepared.train, prepared.val)
    assert default_test_uri(s) == prepared.test != samples_test

    explicit = _settings(tmp_path, train_uri="/data/t.jsonl", test_uri="/data/t.csv")
    assert default_datasets(explicit) == ("/data/t.jsonl", None)  # an explicit --train wins, with its own --val
    assert default_test_uri(explicit) == "/data/t.csv"
    other_run = _settings(tmp_path, run_name="other")
    assert default_test_uri(other_run) == samples_test  # another run's prepared data is not this run's


def test_evaluate_model_tuned_is_the_endpoint_tune_recorded(tmp_path):
    s = _settings(tmp_path)
    assert resolve_model(s, None) == resolve_model(s, "base") == s.base_model
    with pytest.raises(FileNotFoundError, match="run 'default' has no tuned model yet; run `sftflow tune`"):
        resolve_model(s, "tuned")
    TunedModel(job="job-1", key="k1", tuned_model="local:job-1", endpoint="/root/models/job-1").write(
        layout.tuned_uri(s.run_root))
    assert resolve_model(s, "tuned") == "/root/models/job-1"
    assert resolve_model(s, "projects/p/locations/l/endpoints/9") == "projects/p/locations/l/endpoints/9"
