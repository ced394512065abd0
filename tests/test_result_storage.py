"""Prefect's task results and cache records in the run's bucket (tasks/results.py), against the GCS emulator:
a cached step is served from the bucket (nothing local), and the "never unpickle" guard covers the bucket."""

from __future__ import annotations

import json
import tempfile
import types
from pathlib import Path

from sftflow.config import load_settings
from sftflow.infra import storage
from tests.servers.google_tokens import TokenServer, service_account_key_file
from tests.unhappy.test_evaluation_faults import _TouchOnUnpickle, write_test_csv


def _validate_flow():
    from prefect import flow

    from tasks.data import validate
    from tasks.results import use_result_storage

    @flow(persist_result=False, result_serializer="json")
    def validate_in_bucket(path: str, bucket: str):
        use_result_storage(load_settings(bucket=bucket))
        return validate(path, "test", "t.csv")

    return validate_in_bucket


def _key(path: str) -> str:
    """The validate task's cache key for `path` as a run computes it against a store that holds no record yet.
    The context names an empty store of its own: with none, the key's guard would read this process's local
    result folder, where an earlier test of the session may have planted a non-JSON record under the same key,
    and the guard would then step around it (another key than the run's)."""
    from prefect.filesystems import LocalFileSystem

    from tasks.data import validate

    empty = LocalFileSystem(basepath=tempfile.mkdtemp(prefix="no-records-"))
    ctx = types.SimpleNamespace(task=validate, result_store=types.SimpleNamespace(metadata_storage=None,
                                                                                   result_storage=empty))
    return validate.cache_key_fn(ctx, {"path": path, "kind": "test", "source": "t.csv"})


def test_settings_place_results_under_the_bucket_unless_told_otherwise(tmp_path):
    assert load_settings(local_root=tmp_path).result_storage is None  # Prefect's local default
    assert load_settings(bucket="b/p").result_storage == "gs://b/p/prefect-results"
    assert load_settings(bucket="b", prefect_result_storage="gs://c/x/").result_storage == "gs://c/x"
    assert load_settings(prefect_result_storage="my-results").result_storage == "my-results"  # a GcsBucket block


def test_cached_step_is_served_from_the_bucket_and_its_record_is_json(gcs_bucket, tmp_path):
    from prefect.settings import get_current_settings

    from tests.flowutil import task_states

    csv_path = str(write_test_csv(tmp_path / "t.csv", 3))
    key = _key(csv_path)
    local = Path(get_current_settings().results.local_storage_path).expanduser() / key
    flow = _validate_flow()

    local_before = local.stat().st_mtime_ns if local.exists() else None  # an earlier test's, if any
    first = flow(csv_path, gcs_bucket, return_state=True)
    assert task_states(first)["validate"] == ["Completed"]
    record = json.loads(storage.read_bytes(f"{gcs_bucket}/prefect-results/{key}"))
    assert record["metadata"]["serializer"]["type"] == "json"
    assert (local.stat().st_mtime_ns if local.exists() else None) == local_before  # nothing written on this disk

    again = flow(csv_path, gcs_bucket, return_state=True)
    assert task_states(again)["validate"] == ["Cached"]  # read back from the bucket
    assert again.result().examples == 3


def test_planted_pickle_record_in_the_bucket_is_never_unpickled(gcs_bucket, tmp_path):
    from prefect._internal.result_records import ResultRecord, ResultRecordMetadata
    from prefect.serializers import PickleSerializer

    from tests.flowutil import task_states

    csv_path = str(write_test_csv(tmp_path / "t.csv", 3))
    key = _key(csv_path)
    ran = tmp_path / "code-ran"
    planted = ResultRecord(result=_TouchOnUnpickle(ran),
                           metadata=ResultRecordMetadata(serializer=PickleSerializer(), storage_key=key))
    storage.write_bytes(f"{gcs_bucket}/prefect-results/{key}", planted.serialize())

    state = _validate_flow()(csv_path, gcs_bucket, return_state=True)
    assert state.result().examples == 3
    assert task_states(state)["validate"] == ["Completed"]  # recomputed, the planted record stepped around
    assert not ran.exists()
    kept = json.loads(storage.read_bytes(f"{gcs_bucket}/prefect-results/{key}"))
    assert kept["metadata"]["serializer"]["type"] == "pickle"  # still there, never read as a result


def test_result_storage_needs_no_bucket_metadata_permission(monkeypatch):
    """prefect-gcp opens every object through `get_bucket` (a bucket GET, `storage.buckets.get`, which Storage
    Object Admin lacks); ours makes no request there: here any request would meet a closed port."""
    from sftflow.infra import gcs
    from tests.servers.gcs_fixtures import free_port

    from tasks.results import SftflowGcsClient

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    gcs.reset_clients()
    try:
        bucket = SftflowGcsClient().get_cloud_storage_client().get_bucket("some-bucket")
        assert bucket.name == "some-bucket"
    finally:
        gcs.reset_clients()


def test_a_gcs_bucket_block_named_in_the_setting_keeps_the_results_with_its_own_credentials(gcs_bucket, tmp_path):
    """prefect_result_storage = the name of a saved prefect-gcp GcsBucket block (with its GcpCredentials block): the
    task's record lands in that block's bucket and folder as JSON, a rerun is served from there, and every request
    carried the block's credentials (a token from its key's token URI), not sftflow's."""
    import uuid

    from prefect_gcp import GcpCredentials
    from prefect_gcp.cloud_storage import GcsBucket

    from tasks.results import result_storage_block
    from tests.flowutil import task_states

    token = TokenServer()
    try:
        name = f"results-{uuid.uuid4().hex[:8]}"
        creds = GcpCredentials(service_account_file=service_account_key_file(
            tmp_path / "key.json", token.url, project="blk-project", email="results@blk-project.iam.gserviceaccount.com"))
        GcsBucket(bucket=gcs_bucket[5:], bucket_folder="team-results", gcp_credentials=creds).save(name)
        assert isinstance(result_storage_block(name), GcsBucket)

        from prefect import flow

        from tasks.data import validate
        from tasks.results import use_result_storage

        @flow(persist_result=False, result_serializer="json")
        def validate_in_block(path: str):
            use_result_storage(load_settings(prefect_result_storage=name))
            return validate(path, "test", "t.csv")

        csv_path = str(write_test_csv(tmp_path / "t.csv", 3))
        first = validate_in_block(csv_path, return_state=True)
        assert task_states(first)["validate"] == ["Completed"]
        record = json.loads(storage.read_bytes(f"{gcs_bucket}/team-results/{_key(csv_path)}"))
        assert record["metadata"]["serializer"]["type"] == "json"
        assert token.hits >= 1  # the block's own service account asked for its token

        again = validate_in_block(csv_path, return_state=True)
        assert task_states(again)["validate"] == ["Cached"]  # read back through the block
        assert again.result().examples == 3
    finally:
        token.close()


def test_a_missing_block_name_is_one_line():
    import pytest

    from sftflow.errors import ConfigError
    from tasks.results import result_storage_block

    with pytest.raises(ConfigError, match=r"prefect_result_storage: no GcsBucket block named 'no-such-results-block'"):
        result_storage_block("no-such-results-block")
