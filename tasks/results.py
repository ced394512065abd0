"""Where Prefect keeps sftflow's task results and cache records: shared, so any worker serves a cached step.

A cache record *is* the persisted result, stored under the cache key in the result storage (Prefect 3:
with no `cache_policy.key_storage` the metadata lives beside the result,
https://docs.prefect.io/v3/develop/task-caching and https://docs.prefect.io/v3/develop/results). Local
result storage (Prefect's default, `PREFECT_RESULTS_LOCAL_STORAGE_PATH`) is seen by one machine only, so
a run continued on a fresh worker would recompute every step. `Settings.result_storage` names a shared
place instead: `gs://bucket/prefix` (a prefect-gcp `GcsBucket` built here, talking through sftflow's one
Cloud Storage client, `sftflow.infra.gcs`, so the same credentials and `STORAGE_EMULATOR_HOST` apply)
or the name of a saved `GcsBucket` block (its own credentials), defaulting to `<bucket>/prefect-results`
when the run has a bucket.

How it applies to a run: a flow calls `use_result_storage(settings)` (flows.common.settings_for does)
and the flow run's result store takes that storage; Prefect derives every task's store from the run's
(`ResultStore.update_for_task` keeps the parent's `result_storage` when the task names none, see
https://github.com/PrefectHQ/prefect/blob/main/src/prefect/results.py), and subflows inherit it. Settings
are per run (a flow parameter may set the bucket), which is why this is not a decorator argument.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any

from prefect.context import FlowRunContext
from prefect.filesystems import LocalFileSystem, WritableFileSystem

from sftflow.config import Settings
from sftflow.errors import ConfigError
from sftflow.infra import gcs, storage


@functools.cache
def _gcs_client_block() -> type:
    """SftflowGcsClient, built on first use: prefect_gcp imports google-cloud-aiplatform and BigQuery (about half
    of a flow's import time, measured with -X importtime), which a run without a bucket never needs, and every
    flow process (a resumed run included) pays before it can say Running."""
    from prefect_gcp.credentials import GcpCredentials

    class SftflowGcsClient(GcpCredentials):
        """GcpCredentials whose Cloud Storage client is sftflow's (token → ADC → anonymous, emulator-aware).

        prefect-gcp's own GcpCredentials calls `google.auth.default()` when built and always hands the
        client explicit credentials; this one is never saved, only built in-process for a gs:// setting."""

        _block_type_name = "sftflow GCS client"

        def block_initialization(self) -> None:  # no google.auth.default(): sftflow.infra.credentials decides
            pass

        def get_cloud_storage_client(self, project: str | None = None) -> Any:
            return _ObjectsOnly(gcs.client())

    return SftflowGcsClient


def __getattr__(name: str) -> Any:
    if name == "SftflowGcsClient":
        return _gcs_client_block()
    raise AttributeError(name)


class _ObjectsOnly:
    """sftflow's storage client, except that `get_bucket` makes no request.

    prefect-gcp's GcsBucket reads and writes every object through `client.get_bucket(name)`, a bucket
    metadata GET that needs `storage.buckets.get`, which the role README grants (Storage Object Admin)
    does not include: each cache read and write would answer 403. Object requests need no bucket
    metadata (`client.bucket(name)` is the SDK's request-free handle)."""

    def __init__(self, client: Any):
        self._client = client

    def get_bucket(self, bucket_or_name: Any, *args: Any, **kwargs: Any) -> Any:
        return self._client.bucket(getattr(bucket_or_name, "name", bucket_or_name))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


_blocks: dict[str, WritableFileSystem] = {}
_blocks_lock = threading.Lock()


def result_storage_block(where: str) -> WritableFileSystem:
    """The storage block for a `result_storage` value: gs:// URI, local path, or GcsBucket block name."""
    with _blocks_lock:
        if where in _blocks:
            return _blocks[where]
    from prefect_gcp.cloud_storage import GcsBucket  # here, not at import: see _gcs_client_block

    if storage.is_gcs(where):
        bucket, folder = storage.split_gcs(where)
        block: WritableFileSystem = GcsBucket(bucket=bucket, bucket_folder=folder, gcp_credentials=_gcs_client_block()())
    elif "/" in where or where.startswith("."):
        block = LocalFileSystem(basepath=str(Path(where).expanduser().resolve()))
    else:
        try:
            block = GcsBucket.load(where)
        except Exception as exc:  # noqa: BLE001 - Prefect: ValueError "Unable to find block document named ..."
            raise ConfigError(f"prefect_result_storage: no GcsBucket block named {where!r} ({exc}); give a "
                              "gs://bucket/prefix or create the block (prefect block register -m prefect_gcp)") from None
    with _blocks_lock:
        return _blocks.setdefault(where, block)


def use_result_storage(settings: Settings) -> WritableFileSystem | None:
    """Make the running flow keep its tasks' results and cache records where `settings` say; the
    storage, or None when it is Prefect's local default (or no flow is running)."""
    where = settings.result_storage
    ctx = FlowRunContext.get()
    if where is None or ctx is None:
        return None
    block = result_storage_block(where)
    if ctx.result_store.result_storage is not block:
        ctx.result_store = ctx.result_store.model_copy(update={"result_storage": block})
    return block


def read_record(context: Any, key: str) -> tuple[str, bytes | None]:
    """(where, raw bytes) of the cache record Prefect would read for `key` in this task run (None: none
    there). Raises what the storage raised when it could not tell whether one is there."""
    from prefect._internal.compatibility.blocks import call_explicitly_sync_block_method
    from prefect.settings import get_current_settings

    store = getattr(context, "result_store", None)
    block = None if store is None else (store.metadata_storage or store.result_storage)
    if block is None:  # Prefect falls back to its default local storage
        block = LocalFileSystem(basepath=str(Path(get_current_settings().results.local_storage_path).expanduser()))
    where = (f"gs://{block.bucket}/{block.bucket_folder}{key}" if type(block).__name__ == "GcsBucket"
             else f"{getattr(block, 'basepath', '')}/{key}")
    try:
        return where, call_explicitly_sync_block_method(block, "read_path", (key,), {})
    except Exception as exc:
        from google.api_core import exceptions as gexc

        if isinstance(exc, (FileNotFoundError, gexc.NotFound)) or (
                isinstance(exc, ValueError) and "does not exist" in str(exc)):  # LocalFileSystem's "missing"
            return where, None
        raise
