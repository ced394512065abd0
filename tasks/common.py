"""What every sftflow task shares: the transient-only retry rule, cache keys, progress artifacts."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.tasks import exponential_backoff
from prefect.transactions import get_transaction

import sftflow
from sftflow.infra.progress import batch_note
from sftflow.infra.transient import is_transient

#: Keyword arguments for a task that retries only transient failures, with jittered backoff.
RETRY_TRANSIENT: dict[str, Any] = {
    "retries": 4,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
}


def retry_transient(task, task_run, state) -> bool:
    """retry_condition_fn: retry connection errors, timeouts, 429 and 5xx; never bad input."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - we classify whatever the task raised
        return is_transient(exc)
    return False


#: Part of every cache key: bump it when what a cached task returns changes shape (e.g. a dict became
#: a sftflow.records record), so an entry in the old shape is never served to new code.
RESULTS_FORMAT = 2


def key_from(build: Callable[[dict[str, Any]], Any]) -> Callable[[Any, dict[str, Any]], str | None]:
    """A cache_key_fn hashing the task's name, sftflow's version and `build(parameters)`.

    `build` must return content hashes / plain values, never paths alone, so a changed input
    file is never served from a stale cache entry. A key never raises: when `build` fails (a
    missing input file, an unreachable bucket) the key is None — Prefect neither looks up nor
    stores a cache entry for the run — and the task body meets and reports the real error,
    instead of Prefect logging a second traceback for the key.
    """

    def cache_key(context, parameters: dict[str, Any]) -> str | None:
        try:
            inputs = build(parameters)
        except Exception:  # noqa: BLE001 - the task body reports it; a key must not
            return None
        material = [context.task.name, sftflow.__version__, RESULTS_FORMAT, inputs]
        blob = json.dumps(material, sort_keys=True, default=str).encode()
        return _trusted(hashlib.sha256(blob).hexdigest(), context)

    return cache_key


def _trusted(key: str, context: Any = None) -> str:
    """`key`, unless the result store holds a record under it that is not sftflow's JSON.

    Prefect deserialises a cache record with the serializer the *record* names, so a record planted
    in a shared results folder or bucket naming "pickle" would run code on a cache hit, whatever the
    task's own `result_serializer`. Such a record is stepped around: the key is changed, so the task
    recomputes and never reads it. Covers whatever storage this task run reads its records from
    (local folder, gs:// bucket, a GcsBucket block: tasks.results). A store that cannot be read now
    (an outage) is stepped around too: recomputing is safe, deserialising unseen bytes is not.
    """
    from tasks.results import read_record

    log = logging.getLogger("sftflow")
    try:
        where, raw = read_record(context, key)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("cache record %s could not be read (%s); not using the cache for this run", key, exc)
        return hashlib.sha256(f"{key}:unreadable-record".encode()).hexdigest()
    if raw is None:
        return key  # no record: nothing will be deserialised from it
    try:
        kind = json.loads(raw)["metadata"]["serializer"]["type"]
    except (ValueError, KeyError, TypeError):
        kind = None
    if kind == "json":
        return key
    log.warning("%s: cache record is not a JSON record (serializer %r); ignoring it and recomputing", where, kind)
    return hashlib.sha256(f"{key}:untrusted-record".encode()).hexdigest()


def do_not_cache() -> None:
    """Keep the running task's result out of Prefect's cache (it still completes normally).

    For a result that is usable now but must not be served to a rerun (an evaluation with a few
    errored examples: the rerun must ask those again). Prefect writes a task's cache record when
    its transaction commits; `write_on_commit=False` is the switch Prefect's own engine uses to
    skip that write (prefect/task_engine.py, `handle_success`; see `transaction(write_on_commit=)`
    in https://github.com/PrefectHQ/prefect/blob/main/src/prefect/transactions.py).
    """
    txn = get_transaction()
    if txn is None:  # called outside a task run (e.g. `task.fn(...)` in a unit test): nothing to skip
        return
    txn.write_on_commit = False


class ProgressArtifact:
    """An on_progress(done, total, info) callback that drives one Prefect progress artifact."""

    def __init__(self, description: str, key: str | None = None, min_step: float = 1.0):
        self._id = create_progress_artifact(progress=0.0, key=key, description=description)
        self._description = description
        self._last = -1.0
        self._last_note: str | None = None
        self._min_step = min_step

    def __call__(self, done: int, total: int | None, info: dict | None = None) -> None:
        if not total:
            return
        pct = round(100.0 * done / total, 1)
        note = batch_note(info or {})
        if pct - self._last >= self._min_step or done >= total or note != self._last_note:
            description = f"{self._description}: {note}" if note else None
            update_progress_artifact(artifact_id=self._id, progress=pct, description=description)
            self._last, self._last_note = pct, note

