"""Settings: sources, priorities, validation messages, secrets."""

import pytest

from sftflow.config import PUBLIC_TRAIN, load_settings
from sftflow.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for k in list(__import__("os").environ):
        if k.startswith("SFTFLOW_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)


def test_defaults_are_the_codelabs():
    s = load_settings()
    assert (s.backend, s.region, s.epochs, s.adapter_size, s.learning_rate_multiplier) == ("local", "us-central1", 1, 4, 1.0)
    assert (s.temperature, s.max_output_tokens, s.safety_threshold, s.samples) == (0.1, 1024, "BLOCK_ONLY_HIGH", 50)
    assert s.limit == 1000


def test_env_then_dotenv_then_overrides(monkeypatch, tmp_path):
    (tmp_path / ".env").write_text("SFTFLOW_SAMPLES=7\nSFTFLOW_EPOCHS=3\nUNRELATED=1\n")
    monkeypatch.setenv("SFTFLOW_EPOCHS", "5")
    s = load_settings(samples=9, temperature=None)
    assert (s.samples, s.epochs, s.temperature) == (9, 5, 0.1)


def test_invalid_value_names_field_and_allowed_values(monkeypatch):
    monkeypatch.setenv("SFTFLOW_BACKEND", "gcp")
    with pytest.raises(ConfigError, match=r"backend \(SFTFLOW_BACKEND\): Input should be 'local' or 'vertex', got 'gcp'"):
        load_settings()


def test_adapter_size_allowed_values():
    with pytest.raises(ConfigError, match="adapter_size.*1, 2, 4, 8 or 16"):
        load_settings(adapter_size=3)


def test_unknown_override_is_rejected():
    with pytest.raises(ConfigError, match="epochz: unknown setting"):
        load_settings(epochz=2)


def test_vertex_needs_project_and_a_bucket_only_to_tune():
    with pytest.raises(ConfigError, match="project: required"):
        load_settings(backend="vertex")
    no_bucket = load_settings(backend="vertex", project="p")  # evaluate / compare need no bucket
    assert no_bucket.storage_root == str(no_bucket.local_root.resolve())
    with pytest.raises(ConfigError, match=r"bucket: required for `tune` .*SFTFLOW_BUCKET or --bucket"):
        no_bucket.require_bucket("tune")
    load_settings(project="p").require_bucket("tune")  # the local backend never needs one
    s = load_settings(backend="vertex", project="p", bucket="b")
    assert s.storage_root == "gs://b"
    assert s.sources()["train"] == PUBLIC_TRAIN
    assert s.base_model == "gemini-2.5-flash"


def test_local_default_sources_are_the_embedded_samples():
    s = load_settings()
    assert all(__import__("os").path.isfile(p) for p in s.sources().values())


def test_local_jobs_are_polled_often_cloud_jobs_at_poll_interval():
    assert load_settings().tuning_poll_interval == 5.0  # a file on this machine: a finished job is seen at once
    assert load_settings(poll_interval=2).tuning_poll_interval == 2.0
    assert load_settings(backend="vertex", project="p").tuning_poll_interval == 60.0


def test_token_is_never_shown(monkeypatch):
    monkeypatch.setenv("SFTFLOW_VERTEX_ACCESS_TOKEN", "test-token-very-secret")
    s = load_settings()
    assert s.vertex_access_token.get_secret_value() == "test-token-very-secret"
    assert "very-secret" not in repr(s) and "very-secret" not in str(s.public_dict())
