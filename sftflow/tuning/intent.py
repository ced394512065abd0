"""Backend-neutral tuning logic: one job per intent, attach instead of resubmitting.

A tuning intent (dataset contents, hyperparameters, base model, run name) hashes to a key
that labels its job. Re-running a flow finds the labelled job and attaches to it, so a
retry or a restarted flow never pays for a second job. Works with any `Tuner`.
`sftflow.tuning.polling` then waits for the job to end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sftflow.infra import storage
from sftflow.backends.base import JobState, JobStatus, Tuner, TuningSpec
from sftflow.errors import BackendError, SftflowError
from sftflow.tuning.hyperparameters import Hyperparameters

log = logging.getLogger(__name__)

#: Bump on purpose, only when the key's inputs change meaning so that old jobs must not be reused: every intent
#: key changes with it, and each intent already run would be submitted, and paid for, again.
KEY_VERSION = 1


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


#: In every key since KEY_VERSION 1, whatever their value: the keys of intents users already ran hold them.
KEYED_ALWAYS = ("epochs", "adapter_size", "learning_rate_multiplier")


def tuning_key(
    dataset_hashes: Mapping[str, str],
    *,
    base_model: str,
    hyperparameters: Hyperparameters,
    run_name: str,
    display_name: str,
    seed: int,
) -> str:
    """A stable, GCP-label-safe key ("k" + 20 hex chars) for one tuning intent.

    `dataset_hashes` maps a role ("train", "val") to its content hash. The key covers KEY_VERSION, the
    datasets, base model, run name, display name, seed, the hyperparameters in KEYED_ALWAYS and every other
    hyperparameter that differs from its default: a hyperparameter added later, left at its default, leaves
    every key (and so every job already paid for) as it was. The payload's shape is that of KEY_VERSION 1,
    byte for byte (tests/test_tuning_keys.py holds keys computed before the hyperparameter type existed).
    """
    hp = hyperparameters.keyed(KEYED_ALWAYS)
    payload: dict[str, Any] = {
        "v": KEY_VERSION,
        "datasets": {str(k): str(v) for k, v in dataset_hashes.items()},
        "base_model": base_model,
        "epochs": int(hp.pop("epochs")),
        "adapter_size": int(hp.pop("adapter_size")),
        "learning_rate_multiplier": float(hp.pop("learning_rate_multiplier")),
        "run_name": run_name,
        "extra": {"display_name": display_name, "seed": seed},
    }
    if hp:  # hyperparameters set away from their defaults, beyond the first three
        payload["hyperparameters"] = hp
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
    before_submit: Callable[[], None] | None = None,
    claims: Claims | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[str, bool]:
    """The job for `spec`: the newest alive one labelled `spec.key`, else a new one.

    A SUCCEEDED job whose tuned model or endpoint was deleted (cleanup) does not count as alive.
    Returns (job name, attached). Raises JobFailed when only failed/cancelled/expired jobs
    exist for the key and `resubmit_failed` is false, so a broken job is not silently
    paid for twice. With `claims`, concurrent callers for one intent submit one job between
    them (see Claims). Each decision (attached, submitted, resubmitting, waiting, took over) is logged.
    `before_submit()` runs only when a new job is about to be paid for (not when attaching): a gate
    such as the cost cap raises there, and nothing is submitted.
    """
    seen: dict[str, float] = {}
    while True:
        jobs = tuner.find(spec.key)
        usable = [j for j in jobs if _usable(tuner, j)]
        if usable:
            job = usable[0]
            log.info("attaching to tuning job %s (%s) for key %s", job.name, job.state.value, spec.key)
            return job.name, True
        if jobs:
            last = jobs[0]
            if not last.state.alive and not resubmit_failed:
                raise JobFailed(last, hint="Rerun with --resubmit-failed (or resubmit_failed=true) to submit a "
                                           "new job for the same inputs")
            log.info("tuning job %s for key %s ended %s: submitting a new one (resubmit_failed)", last.name,
                     spec.key, last.state.value)
        if before_submit is not None:
            before_submit()  # a gate (cost cap) raises here, before any claim or submit
            before_submit = None
        if claims is None:
            return _submit(tuner, spec), False
        with _intent_lock(claims.owner, spec.key):  # threads of one owner take turns; processes race on the claim
            outcome = _claim_or_wait(tuner, spec, jobs, claims, seen)
        if outcome is not None:
            return outcome
        sleep(claims.wait_step)


_cleaned_up_logged: set[str] = set()
_intent_locks: dict[tuple[str, str], threading.Lock] = {}
_intent_locks_guard = threading.Lock()


def _intent_lock(owner: str, key: str) -> threading.Lock:
    """One lock per (owner, intent) in this process: a claim tells owners apart, not threads, and a claim of
    our own with no job yet reads as our retried attempt, so two threads with one intent (a grid listing a
    configuration twice, a task run twice at once) must not both reach it."""
    with _intent_locks_guard:
        return _intent_locks.setdefault((owner, key), threading.Lock())


def live_job(tuner: Tuner, key: str) -> str | None:
    """The job `ensure_job` would attach to for `key`, if any: its cost is committed, so no gate applies."""
    usable = [j for j in tuner.find(key) if _usable(tuner, j)]
    return usable[0].name if usable else None


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


def _submit(tuner: Tuner, spec: TuningSpec) -> str:
    name = tuner.submit(spec)
    log.info("submitted job %s for key %s", name, spec.key)
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
    seen: dict[str, float],
) -> tuple[str, bool] | None:
    """Win the claim and submit, or attach to the job the winner named; None: look again later."""
    n = 0
    while True:
        uri = claim_uri(claims, spec.key, jobs, n)
        mine = {"owner": claims.owner, "claimed_at": time.time(), "key": spec.key, "job": None}
        if storage.create_if_absent(uri, json.dumps(mine).encode()):
            log.info("claimed tuning intent %s (%s)", spec.key, uri)
            return _submit_claimed(tuner, spec, uri, mine)
        claim = _read_claim(uri)
        if claim is None:
            continue
        if claim.get("owner") == claims.owner and not claim.get("job"):  # our own, from a retried attempt
            return _submit_claimed(tuner, spec, uri, claim)
        if claim.get("job"):
            try:
                status = tuner.get(claim["job"])
            except BackendError:  # names a job that no longer exists
                n += 1
                continue
            if _usable(tuner, status):
                log.info("attaching to tuning job %s, submitted by %s for key %s", claim["job"], claim.get("owner"),
                         spec.key)
                return claim["job"], True
            return None  # that job has ended: the next look sees it among the key's jobs
        new_wait = uri not in seen
        first = seen.setdefault(uri, time.monotonic())
        age = max(time.time() - float(claim.get("claimed_at") or 0), time.monotonic() - first)
        if age >= claims.stale_after:
            log.warning("claim %s by %s names no job after %.0fs (claimant gone?): taking it over", uri,
                        claim.get("owner"), age)
            n += 1
            continue
        if new_wait:
            log.info("tuning intent %s is being submitted by %s: waiting for its job", spec.key, claim.get("owner"))
        return None


def _submit_claimed(tuner: Tuner, spec: TuningSpec, uri: str, claim: dict) -> tuple[str, bool]:
    """Holding the claim: look once more, submit, name the job in the claim, then settle duplicates."""
    alive = [j for j in tuner.find(spec.key) if _usable(tuner, j)]
    if alive:  # appeared between our look and our claim
        name, attached = alive[0].name, True
        log.info("attaching to tuning job %s (%s), submitted meanwhile for key %s", name, alive[0].state.value,
                 spec.key)
    else:
        try:
            name, attached = _submit(tuner, spec), False
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
