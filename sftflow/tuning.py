"""Backend-neutral tuning logic: one job per intent, attach instead of resubmitting, poll to the end.

A tuning intent (dataset contents, hyperparameters, base model, run name) hashes to a key
that labels its job. Re-running a flow finds the labelled job and attaches to it, so a
retry or a restarted flow never pays for a second job. Works with any `Tuner`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from sftflow import storage
from sftflow.backends.base import JobState, JobStatus, Tuner, TuningSpec
from sftflow.errors import BackendError, SftflowError, TransientError

log = logging.getLogger(__name__)

KEY_VERSION = 1  # bump when the key's inputs change meaning, so old jobs are not reused


class JobFailed(SftflowError, RuntimeError):
    """A tuning job ended without a usable tuned model; `.status` is its last status."""

    def __init__(self, status: JobStatus, hint: str = ""):
        self.status = status
        error = f": {status.error}" if status.error else ""
        verb = "ended" if status.state.ended else "is"
        msg = f"tuning job {status.name} {verb} {status.state.value}{error}"
        if status.console_url:
            msg += f" (console: {status.console_url})"
        super().__init__(f"{msg}. {hint}" if hint else msg)


class JobTimeout(SftflowError, TimeoutError):
    """Waiting for a job exceeded its time budget.

    `cancelled`: None — the job was left running; True — it was cancelled and confirmed stopped;
    False — a cancel was requested but the job was not seen stopping in time.
    """

    def __init__(self, status: JobStatus, elapsed_s: float, timeout_s: float, cancelled: bool | None = None):
        self.status, self.elapsed_s, self.timeout_s, self.cancelled = status, elapsed_s, timeout_s, cancelled
        if cancelled is None:
            msg = (f"tuning job {status.name} still {status.state.value} after {elapsed_s:.0f}s "
                   f"(timeout {timeout_s:.0f}s); the job was left running (cancel_job_on_timeout=false) — "
                   "wait again to attach to it, or cancel it")
        elif cancelled:
            msg = (f"tuning job {status.name} cancelled after {elapsed_s:.0f} s (tuning timeout); "
                   f"final state {status.state.value}. Raise tuning_timeout (--timeout) to wait longer")
        else:
            msg = (f"tuning job {status.name}: cancel requested after {elapsed_s:.0f} s (tuning timeout) but "
                   f"it still reports {status.state.value}; check it in the console")
            if status.console_url:
                msg += f" ({status.console_url})"
        super().__init__(msg)


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


#: Who this process is, in claims: host, pid and a random part (pids are reused).
OWNER = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Claims:
    """Where claims on tuning intents live (a storage prefix) and how long an unfinished one is honoured.

    Before submitting, a process creates the claim object for (intent, jobs it saw) if absent
    (`storage.create_if_absent`: one winner across processes and machines). The winner submits
    and writes the job's name into the claim; the others wait for that name and attach to it.
    A claim that names no job after `stale_after` seconds (its claimant died before submitting)
    is taken over by creating the next claim in sequence; if the first claimant was only slow,
    both jobs are seen after submitting and the later one is cancelled.
    """

    root: str
    stale_after: float = 300.0
    wait_step: float = 1.0
    owner: str = OWNER


def ensure_job(
    tuner: Tuner,
    spec: TuningSpec,
    *,
    resubmit_failed: bool = False,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
    before_submit: Callable[[], None] | None = None,
    claims: Claims | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[str, bool]:
    """The job for `spec`: the newest alive one labelled `spec.key`, else a new one.

    A SUCCEEDED job whose tuned model or endpoint was deleted (cleanup) does not count as alive.
    Returns (job name, attached). Raises JobFailed when only failed/cancelled/expired jobs
    exist for the key and `resubmit_failed` is false, so a broken job is not silently
    paid for twice. With `claims`, concurrent callers for one intent submit one job between
    them (see Claims). `on_event(kind, info)` receives "attached", "submitted", "resubmitting",
    "claimed", "waiting" and "took-over".
    `before_submit()` runs only when a new job is about to be paid for (not when attaching): a gate
    such as the cost cap raises there, and nothing is submitted.
    """
    emit = on_event or (lambda kind, info: None)
    seen: dict[str, float] = {}
    while True:
        jobs = tuner.find(spec.key)
        usable = [j for j in jobs if _usable(tuner, j)]
        if usable:
            job = usable[0]
            log.info("attaching to tuning job %s (%s) for key %s", job.name, job.state.value, spec.key)
            emit("attached", {"name": job.name, "state": job.state.value, "key": spec.key})
            return job.name, True
        if jobs:
            last = jobs[0]
            if not last.state.alive and not resubmit_failed:
                raise JobFailed(last, hint="Set resubmit_failed to submit a new job for the same inputs")
            emit("resubmitting", {"previous": last.name, "state": last.state.value, "key": spec.key})
        if before_submit is not None:
            before_submit()  # a gate (cost cap) raises here, before any claim or submit
            before_submit = None
        if claims is None:
            return _submit(tuner, spec, emit), False
        outcome = _claim_or_wait(tuner, spec, jobs, claims, emit, seen)
        if outcome is not None:
            return outcome
        sleep(claims.wait_step)


_cleaned_up_logged: set[str] = set()


def _usable(tuner: Tuner, job: JobStatus) -> bool:
    """Alive, and not a SUCCEEDED job whose tuned model/endpoint cleanup deleted (it cannot serve any more)."""
    if not job.state.alive:
        return False
    if job.state is JobState.SUCCEEDED and not tuner.outputs_exist(job):
        if job.name not in _cleaned_up_logged:
            _cleaned_up_logged.add(job.name)
            log.warning("tuning job %s SUCCEEDED but its tuned model/endpoint no longer exist: not reusing it",
                        job.name)
        return False
    return True


def _submit(tuner: Tuner, spec: TuningSpec, emit: Callable[[str, dict[str, Any]], None]) -> str:
    name = tuner.submit(spec)
    log.info("submitted tuning job %s for key %s", name, spec.key)
    emit("submitted", {"name": name, "key": spec.key})
    return name


def claim_uri(claims: Claims, key: str, jobs: list[JobStatus], n: int) -> str:
    """The n-th claim for `key` given the jobs that exist: a new failed job means a new claim."""
    names = ",".join(sorted(j.name for j in jobs))
    seen = hashlib.sha256(names.encode()).hexdigest()[:12] if names else "none"
    return storage.join(claims.root, key, f"{seen}-{n}.json")


def _read_claim(uri: str) -> dict | None:
    try:
        return json.loads(storage.read_text(uri))
    except storage.StorageError:
        return None  # released by its owner meanwhile


def _claim_or_wait(
    tuner: Tuner,
    spec: TuningSpec,
    jobs: list[JobStatus],
    claims: Claims,
    emit: Callable[[str, dict[str, Any]], None],
    seen: dict[str, float],
) -> tuple[str, bool] | None:
    """Win the claim and submit, or attach to the job the winner named; None: look again later."""
    n = 0
    while True:
        uri = claim_uri(claims, spec.key, jobs, n)
        mine = {"owner": claims.owner, "claimed_at": time.time(), "key": spec.key, "job": None}
        if storage.create_if_absent(uri, json.dumps(mine).encode()):
            emit("claimed", {"claim": uri, "key": spec.key})
            return _submit_claimed(tuner, spec, uri, mine, emit)
        claim = _read_claim(uri)
        if claim is None:
            continue
        if claim.get("owner") == claims.owner and not claim.get("job"):  # our own, from a retried attempt
            return _submit_claimed(tuner, spec, uri, claim, emit)
        if claim.get("job"):
            try:
                status = tuner.get(claim["job"])
            except BackendError:  # names a job that no longer exists
                n += 1
                continue
            if _usable(tuner, status):
                log.info("attaching to tuning job %s, submitted by %s for key %s", claim["job"], claim.get("owner"),
                         spec.key)
                emit("attached", {"name": claim["job"], "state": status.state.value, "key": spec.key})
                return claim["job"], True
            return None  # that job has ended: the next look sees it among the key's jobs
        new_wait = uri not in seen
        first = seen.setdefault(uri, time.monotonic())
        age = max(time.time() - float(claim.get("claimed_at") or 0), time.monotonic() - first)
        if age >= claims.stale_after:
            log.warning("claim %s by %s names no job after %.0fs (claimant gone?): taking it over", uri,
                        claim.get("owner"), age)
            emit("took-over", {"claim": uri, "owner": claim.get("owner"), "key": spec.key})
            n += 1
            continue
        if new_wait:
            log.info("tuning intent %s is being submitted by %s: waiting for its job", spec.key, claim.get("owner"))
            emit("waiting", {"claim": uri, "owner": claim.get("owner"), "key": spec.key})
        return None


def _submit_claimed(
    tuner: Tuner, spec: TuningSpec, uri: str, claim: dict, emit: Callable[[str, dict[str, Any]], None]
) -> tuple[str, bool]:
    """Holding the claim: look once more, submit, name the job in the claim, then settle duplicates."""
    alive = [j for j in tuner.find(spec.key) if _usable(tuner, j)]
    if alive:  # appeared between our look and our claim
        name, attached = alive[0].name, True
        emit("attached", {"name": name, "state": alive[0].state.value, "key": spec.key})
    else:
        try:
            name, attached = _submit(tuner, spec, emit), False
        except BaseException:
            storage.delete(uri)  # release: the next attempt (ours or another process's) may claim again
            raise
    storage.write_text(uri, json.dumps(dict(claim, job=name, named_at=time.time())), "application/json")
    return _settle(tuner, spec.key, name, attached)


def _settle(tuner: Tuner, key: str, name: str, attached: bool) -> tuple[str, bool]:
    """After submitting, the key's oldest alive job wins; a later duplicate of ours is cancelled."""
    alive = [j for j in tuner.find(key) if _usable(tuner, j)]
    if len(alive) <= 1 or attached:
        return name, attached
    winner = min(alive, key=lambda j: (j.create_time or "", j.name))
    if winner.name == name:
        return name, attached
    log.warning("tuning job %s duplicates %s for key %s: cancelling it and attaching to %s", name, winner.name,
                key, winner.name)
    tuner.cancel(name)
    return winner.name, True


def await_job(
    tuner: Tuner,
    name: str,
    *,
    poll_interval: float,
    timeout: float,
    on_update: Callable[[JobStatus, float], None] | None = None,
    max_transient_failures: int = 20,
    cancel_on_timeout: bool = False,
    cancel_confirm_timeout: float = 300.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> JobStatus:
    """Poll `name` until it ends; return its status if it SUCCEEDED.

    Transient polling errors are retried (backoff from 1 s, capped at poll_interval) up
    to `max_transient_failures` in a row. Raises JobTimeout after `timeout` seconds and
    JobFailed for any other end state (PAUSED and PARTIALLY_SUCCEEDED included: neither
    yields a usable model). On timeout the job keeps running unless `cancel_on_timeout`:
    then it is cancelled and polled until it reports CANCELLED (or is gone), so the meter
    stops (see `cancel_and_confirm`); a job that succeeded meanwhile is returned.
    """

    def timed_out(st: JobStatus, elapsed: float) -> JobTimeout | JobStatus:
        if not cancel_on_timeout:
            return JobTimeout(st, elapsed, timeout)
        log.warning("tuning job %s: timeout after %.0fs; cancelling it (cancel_job_on_timeout=true)", name, elapsed)
        final, stopped = cancel_and_confirm(tuner, name, last=st, poll_interval=min(poll_interval, 5.0),
                                            timeout=cancel_confirm_timeout, sleep=sleep, clock=clock)
        if final.state is JobState.SUCCEEDED:
            return final
        return JobTimeout(final, elapsed, timeout, cancelled=stopped)

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
                outcome = timed_out(status, clock() - start)
                if isinstance(outcome, JobStatus):
                    return outcome
                raise outcome from exc
            sleep(delay)
            continue
        elapsed = clock() - start
        if on_update is not None:
            on_update(status, elapsed)
        if status.state.ended:
            break
        if elapsed >= timeout:
            outcome = timed_out(status, elapsed)
            if isinstance(outcome, JobStatus):
                return outcome
            raise outcome
        sleep(max(0.0, min(poll_interval, timeout - elapsed)))
    if status.state is JobState.SUCCEEDED:
        return status
    raise JobFailed(status)


def _gone(exc: BaseException) -> bool:
    """The backend says the job does not exist (HTTP 404 / a deleted local job)."""
    return isinstance(exc, FileNotFoundError) or getattr(exc.__cause__, "code", None) == 404


def cancel_and_confirm(
    tuner: Tuner,
    name: str,
    *,
    last: JobStatus,
    poll_interval: float,
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[JobStatus, bool]:
    """Cancel `name` once and poll until it has stopped: (last status, stopped?).

    Stopped means the job reports an end state (CANCELLED, or one it reached meanwhile) or the
    backend says it is gone. A cancel refused because the job already ended is not an error.
    Transient errors are retried; after `timeout` seconds without an end state: (status, False).
    """
    start = clock()
    status = last
    for attempt in range(5):
        try:
            tuner.cancel(name)
            break
        except TransientError as exc:
            log.warning("cancelling %s failed (%s); retry %d", name, exc, attempt + 1)
            sleep(min(poll_interval, 2.0 ** attempt))
        except BackendError as exc:
            if _gone(exc):
                return replace(status, state=JobState.CANCELLED), True
            log.warning("cancel of %s refused (%s); checking its state", name, exc)
            break
    while True:
        try:
            status = tuner.get(name)
        except TransientError as exc:
            log.warning("checking cancelled job %s failed (%s)", name, exc)
        except (BackendError, FileNotFoundError) as exc:
            if _gone(exc):
                log.info("tuning job %s is gone after the cancel", name)
                return replace(status, state=JobState.CANCELLED), True
            raise
        else:
            if status.state.ended:
                log.info("tuning job %s stopped: %s", name, status.state.value)
                return status, True
        if clock() - start >= timeout:
            return status, False
        sleep(poll_interval)
