"""Backend-neutral tuning logic: one job per intent, attach instead of resubmitting, poll to the end.

A tuning intent (dataset contents, hyperparameters, base model, run name) hashes to a key
that labels its job. Re-running a flow finds the labelled job and attaches to it, so a
retry or a restarted flow never pays for a second job. Works with any `Tuner`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from sftflow.backends.base import JobState, JobStatus, TransientError, Tuner, TuningSpec

log = logging.getLogger(__name__)

KEY_VERSION = 1  # bump when the key's inputs change meaning, so old jobs are not reused


class JobFailed(RuntimeError):
    """A tuning job ended without a usable tuned model; `.status` is its last status."""

    def __init__(self, status: JobStatus, hint: str = ""):
        self.status = status
        error = f": {status.error}" if status.error else ""
        verb = "ended" if status.state.ended else "is"
        msg = f"tuning job {status.name} {verb} {status.state.value}{error}"
        if status.console_url:
            msg += f" (console: {status.console_url})"
        super().__init__(f"{msg}. {hint}" if hint else msg)


class JobTimeout(TimeoutError):
    """Waiting for a job exceeded its time budget; the job itself was left running."""

    def __init__(self, status: JobStatus, elapsed_s: float, timeout_s: float):
        self.status, self.elapsed_s, self.timeout_s = status, elapsed_s, timeout_s
        super().__init__(
            f"tuning job {status.name} still {status.state.value} after {elapsed_s:.0f}s "
            f"(timeout {timeout_s:.0f}s); the job was left running — wait again to attach to it, "
            "or cancel it"
        )


def tuning_key(
    dataset_hashes: Mapping[str, str],
    *,
    base_model: str,
    epochs: int,
    adapter_size: int,
    learning_rate_multiplier: float,
    run_name: str,
    **extra: Any,
) -> str:
    """A stable, GCP-label-safe key ("k" + 20 hex chars) for one tuning intent.

    `dataset_hashes` maps a role ("train", "val") to its content hash; `extra` holds
    backend-specific inputs (seed, budget) — pass only JSON-serialisable values.
    """
    payload = {
        "v": KEY_VERSION,
        "datasets": {str(k): str(v) for k, v in dataset_hashes.items()},
        "base_model": base_model,
        "epochs": int(epochs),
        "adapter_size": int(adapter_size),
        "learning_rate_multiplier": float(learning_rate_multiplier),
        "run_name": run_name,
        "extra": extra,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "k" + hashlib.sha256(canonical.encode()).hexdigest()[:20]


def ensure_job(
    tuner: Tuner,
    spec: TuningSpec,
    *,
    resubmit_failed: bool = False,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
) -> tuple[str, bool]:
    """The job for `spec`: the newest alive one labelled `spec.key`, else a new one.

    A SUCCEEDED job whose tuned model or endpoint was deleted (cleanup) does not count as alive.
    Returns (job name, attached). Raises JobFailed when only failed/cancelled/expired jobs
    exist for the key and `resubmit_failed` is false, so a broken job is not silently
    paid for twice. `on_event(kind, info)` receives "attached", "submitted" and "resubmitting".
    """
    emit = on_event or (lambda kind, info: None)
    jobs = tuner.find(spec.key)
    for job in (j for j in jobs if j.state.alive):
        if job.state is JobState.SUCCEEDED and not tuner.outputs_exist(job):
            # Cleaned up: its model/endpoint are gone, so it cannot serve this intent any more.
            log.warning("tuning job %s SUCCEEDED but its tuned model/endpoint no longer exist: not reusing it",
                        job.name)
            continue
        log.info("attaching to tuning job %s (%s) for key %s", job.name, job.state.value, spec.key)
        emit("attached", {"name": job.name, "state": job.state.value, "key": spec.key})
        return job.name, True
    if jobs:
        last = jobs[0]
        if not last.state.alive and not resubmit_failed:
            raise JobFailed(last, hint="Set resubmit_failed to submit a new job for the same inputs")
        emit("resubmitting", {"previous": last.name, "state": last.state.value, "key": spec.key})
    name = tuner.submit(spec)
    log.info("submitted tuning job %s for key %s", name, spec.key)
    emit("submitted", {"name": name, "key": spec.key})
    return name, False


def await_job(
    tuner: Tuner,
    name: str,
    *,
    poll_interval: float,
    timeout: float,
    on_update: Callable[[JobStatus, float], None] | None = None,
    max_transient_failures: int = 20,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> JobStatus:
    """Poll `name` until it ends; return its status if it SUCCEEDED.

    Transient polling errors are retried (backoff from 1 s, capped at poll_interval) up
    to `max_transient_failures` in a row. Raises JobTimeout after `timeout` seconds (the
    job keeps running) and JobFailed for any other end state (PAUSED and
    PARTIALLY_SUCCEEDED included: neither yields a usable model).
    """
    start = clock()
    failures = 0
    status: JobStatus | None = None
    while True:
        try:
            status = tuner.get(name)
            failures = 0
        except TransientError as exc:
            failures += 1
            if failures > max_transient_failures:
                raise TransientError(
                    f"polling tuning job {name} failed {failures} times in a row; the job was left "
                    f"running: {exc}"
                ) from exc
            delay = min(poll_interval, 2.0 ** (failures - 1))
            log.warning("polling %s failed (%s); retry %d in %.1fs", name, exc, failures, delay)
            if status is not None and clock() - start + delay > timeout:
                raise JobTimeout(status, clock() - start, timeout) from exc
            sleep(delay)
            continue
        elapsed = clock() - start
        if on_update is not None:
            on_update(status, elapsed)
        if status.state.ended:
            break
        if elapsed >= timeout:
            raise JobTimeout(status, elapsed, timeout)
        sleep(max(0.0, min(poll_interval, timeout - elapsed)))
    if status.state is JobState.SUCCEEDED:
        return status
    raise JobFailed(status)
