"""Evaluate a test set through batch jobs, in rounds, and return the same records as online mode.

Round n writes `round-n/input.jsonl` (the examples still unanswered, each with its id label) once
— a rerun reads it back instead of recomputing it, so it finds the same job — and ensures one job
for it (`sftflow.tuning.intent.ensure_job` with claims: a rerun or a crashed caller attaches, two
processes submit one job). Answered rows go into the evaluation's checkpoint (the online mode's
own file, fsync'd per line) as soon as they are read, so a kill loses nothing and no example is
paid for twice. Failed rows go into the next round: another batch job while at least
`online_below` remain, else online; at most `max_rounds` batch rounds. A job PENDING longer than
`pending_timeout` is cancelled and the rest go online (unless `fallback_online` is off), and so
do they after a job that FAILED or EXPIRED as a whole (another would fail alike); that decision is
recorded (`online.json`) so a rerun does not queue a new job.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sftflow.infra import storage
from sftflow.backends.base import GenerationParams, JobState, JobStatus
from sftflow.evaluation.batch.jobs import BatchSpec
from sftflow.evaluation.batch.requests import (
    ID_LABEL,
    id_label,
    ids_of,
    parse_predictions,
    prompt_hash,
    requests_jsonl,
)
from sftflow.evaluation.checkpoint import checkpoint_lock, open_checkpoint
from sftflow.data.testset import TestExample
from sftflow.errors import CheckpointError, SftflowError, TransientError
from sftflow.evaluation.engine import fill_result
from sftflow.tuning.polling import cancel_and_confirm, cancel_on_interrupt, transient_backoff
from sftflow.infra.progress import ProgressFn
from sftflow.evaluation.results import ExampleResult
from sftflow.tuning.intent import OWNER, Claims, JobFailed, ensure_job

log = logging.getLogger(__name__)

KEY_VERSION = 1
OnlineFn = Callable[[list[TestExample]], list[ExampleResult]]


class BatchPendingTimeout(SftflowError, RuntimeError):
    """A batch job stayed PENDING past `pending_timeout` and online fallback is off."""


@dataclass(frozen=True)
class BatchOptions:
    """Where a batch evaluation keeps its files (a gs:// folder Vertex can read) and its limits."""

    root: str  # e.g. gs://bucket/runs/R/eval/base/batch/<ident>
    poll_interval: float = 30.0
    pending_timeout: float = 2 * 3600.0
    fallback_online: bool = True
    online_below: int = 50
    max_rounds: int = 6
    claim_stale_after: float = 300.0
    claim_owner: str = OWNER  # who this caller is in claims (host/pid/random); one per process
    cancel_on_interrupt: bool = True  # Ctrl-C, SIGTERM (a cancelled flow run): cancel the job, stop the meter
    lease_ttl: float = 60.0  # a gs:// checkpoint's lease (sftflow.infra.lease)


@dataclass
class BatchNotes:
    """What happened, for the log, the summary and the report (words: sftflow.evaluation.report.batch_lines)."""

    jobs: list[dict[str, Any]] = field(default_factory=list)
    batch_answered: int = 0
    online_examples: int = 0
    fallback: str | None = None  # "pending-timeout" | "few-failed-rows" | "max-rounds" | "batch job FAILED: …"
    unmatched_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def batch_key(input_text: str, *, model: str, params: GenerationParams, input_uri: str) -> str:
    """A stable key ("b" + 20 hex chars) for one batch intent: input content, model, parameters, file."""
    payload = {"v": KEY_VERSION, "input": hashlib.sha256(input_text.encode()).hexdigest(), "model": model,
               "params": asdict(params), "uri": input_uri}
    return "b" + hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def _created_at(status: JobStatus) -> float | None:
    try:
        return _dt.datetime.fromisoformat(status.create_time).timestamp() if status.create_time else None
    except ValueError:
        return None


def wait_for_job(jobs, name: str, *, poll_interval: float, pending_timeout: float,
                 on_status: Callable[[JobStatus], None] = lambda s: None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time, max_transient_failures: int = 20) -> tuple[JobStatus, bool]:
    """Poll until the job ends: (last status, True if it was cancelled for staying PENDING too long).

    PENDING time counts from the job's createTime, so a rerun after a crash does not restart it.
    """
    failures = 0
    first_seen = clock()
    while True:
        try:
            status = jobs.get(name)
            failures = 0
        except TransientError as exc:
            failures += 1
            delay = transient_backoff(failures, poll_interval, max_transient_failures, f"batch job {name}", exc)
            log.warning("polling batch job %s failed (%s); retry %d", name, exc, failures)
            sleep(delay)
            continue
        on_status(status)
        if status.state.ended:
            return status, False
        created = _created_at(status) or first_seen
        if status.state is JobState.PENDING and clock() - created > pending_timeout:
            log.warning("batch job %s still PENDING after %.0f s (batch_pending_timeout %.0f s): cancelling it",
                        name, clock() - created, pending_timeout)
            final, _stopped = cancel_and_confirm(jobs, name, last=status, poll_interval=min(poll_interval, 5.0),
                                                 timeout=300.0, sleep=sleep)
            on_status(final)
            return final, True
        sleep(poll_interval)


def _ensure(jobs, spec: BatchSpec, claims: Claims, sleep: Callable[[float], None], poll_interval: float,
            attempts: int = 6) -> tuple[str, bool]:
    """(job name, attached) for `spec`: `ensure_job`, retried on 429/5xx/timeouts (it is idempotent:
    claims and the display-name lookup make a retry attach, never submit twice)."""
    for attempt in range(1, attempts + 1):
        try:
            return ensure_job(jobs, spec, claims=claims, sleep=sleep)
        except JobFailed as exc:  # this round's job ended badly before: read what it left
            return exc.status.name, True
        except TransientError as exc:
            if attempt == attempts:
                raise
            delay = min(max(poll_interval, 1.0), 2.0 ** (attempt - 1))
            log.warning("batch job for %s: %s; retry %d in %.0f s", spec.input_uri, exc, attempt, delay)
            sleep(delay)
    raise AssertionError("unreachable")


def _read_outputs(status: JobStatus) -> str:
    out_dir = status.stats.get("output_dir")
    if not out_dir:
        return ""
    return "".join(storage.read_text(u) for u in storage.list_uris(out_dir) if u.endswith(".jsonl"))


def evaluate_batch(
    jobs,
    examples: Sequence[TestExample],
    *,
    model: str,
    batch_model: str,
    params: GenerationParams,
    checkpoint: str | Path,
    options: BatchOptions,
    online: OnlineFn | None = None,
    on_progress: ProgressFn | None = None,
    prompt_of: Callable[[TestExample], str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> tuple[list[ExampleResult], BatchNotes]:
    """Answer and score every example through batch jobs (see the module docstring).

    `model` is what results record (as online mode does: the endpoint for a tuned model);
    `batch_model` what the job runs (a publisher model, or the tuned model's resource name).
    `online(examples)` evaluates examples online into the same checkpoint (None: no fallback;
    examples still unanswered at the end are recorded with their row's failure as the error).
    Returns one result per example, in example order, and what happened.
    """
    prompt_of = prompt_of or (lambda ex: ex.input_text)
    by_id = {ex.id: ex for ex in examples}
    by_label = {id_label(ex.id): ex.id for ex in examples}
    by_hash = {prompt_hash(prompt_of(ex)): ex.id for ex in examples}
    notes = BatchNotes()
    total = len(examples)
    fallback_marker = storage.join(options.root, "online.json")

    with checkpoint_lock(checkpoint, options.lease_ttl) as guard:
        ckpt = open_checkpoint(checkpoint, guard)
        done = {k: v for k, v in ckpt.load().items() if k in by_id and v.error is None}
        others = sorted({r.model for r in done.values() if r.model != model})
        if others:
            raise CheckpointError(f"{checkpoint}: holds results of model(s) {', '.join(others)}, not {model}; "
                                  "use one checkpoint per model")
        last_failure: dict[str, str] = {}
        info: dict[str, Any] = {"mode": "batch", "errors": 0, "retries": 0, "resumed": len(done)}

        def report(extra: dict[str, Any] | None = None, live: int = 0) -> None:
            if on_progress is None:
                return
            try:
                on_progress(min(total, len(done) + live), total, {**info, **(extra or {})})
            except Exception:  # a failing progress display must not stop the evaluation
                log.warning("on_progress callback failed", exc_info=True)

        report()
        try:
            for n in range(1, options.max_rounds + 1):
                todo = [ex for ex in examples if ex.id not in done]
                if not todo or storage.exists(fallback_marker):
                    break
                input_uri = storage.join(options.root, f"round-{n}", "input.jsonl")
                if storage.exists(input_uri):
                    text = storage.read_text(input_uri)
                else:
                    if n > 1 and len(todo) < options.online_below and online is not None:
                        notes.fallback = "few-failed-rows"
                        break
                    text = requests_jsonl(todo, params, prompt_of)
                    if not storage.create_if_absent(input_uri, text.encode(), "application/jsonl"):
                        text = storage.read_text(input_uri)  # another process planned this round first
                round_ids = {by_label[label] for label in ids_of(text) if label in by_label}
                spec = BatchSpec(batch_key(text, model=batch_model, params=params, input_uri=input_uri),
                                 batch_model, input_uri, storage.join(options.root, f"round-{n}", "output"))
                claims = Claims(storage.join(options.root, "claims"), stale_after=options.claim_stale_after,
                                owner=options.claim_owner)
                name, attached = _ensure(jobs, spec, claims, sleep, options.poll_interval)
                info.update(round=n, job=name)
                if n > 1:
                    info["retries"] = info["retries"] + len(round_ids)

                def on_status(st: JobStatus) -> None:
                    info.update(state=st.stats.get("vertex_state", st.state.value),
                                **{k: st.stats[k] for k in ("succeeded", "failed", "incomplete") if k in st.stats})
                    report(live=int(st.stats.get("succeeded", 0)) if not st.state.ended else 0)

                try:
                    status, timed_out = wait_for_job(jobs, name, poll_interval=options.poll_interval,
                                                     pending_timeout=options.pending_timeout, on_status=on_status,
                                                     sleep=sleep, clock=clock)
                except BaseException as exc:
                    if not isinstance(exc, Exception):  # an interrupt, not a polling failure
                        cancel_on_interrupt(jobs, name, enabled=options.cancel_on_interrupt, kind="batch job")
                    raise
                preds, unmatched = parse_predictions(_read_outputs(status), by_label, by_hash, source=name)
                notes.unmatched_rows += unmatched
                answered = failed = 0
                for p in preds:
                    if p.id in done or p.id not in round_ids:
                        continue
                    if p.generation is None:
                        last_failure[p.id] = p.status or "failed row"
                        failed += 1
                        continue
                    ex = by_id[p.id]
                    prompt = prompt_of(ex)
                    res = ExampleResult(id=ex.id, model=model, prompt_chars=len(prompt), reference=ex.output_text,
                                        attempts=n)
                    fill_result(res, p.generation)
                    ckpt.append(res)
                    done[ex.id] = res
                    answered += 1
                notes.batch_answered += answered
                notes.jobs.append({"name": name, "round": n, "state": status.state.value, "attached": attached,
                                   "succeeded": answered, "failed": failed, "error": status.error})
                log.info("batch job %s (round %d) %s: %d answered, %d failed rows, %d missing", name, n,
                         status.state.value, answered, failed, len(round_ids) - answered - failed)
                info["errors"] = sum(1 for ex in examples if ex.id not in done and ex.id in last_failure)
                report()
                if timed_out:
                    if not options.fallback_online or online is None:
                        raise BatchPendingTimeout(
                            f"batch job {name} stayed PENDING longer than batch_pending_timeout "
                            f"({options.pending_timeout:.0f} s) and was cancelled; online fallback is off "
                            "(batch_fallback_online=false)")
                    storage.write_text(fallback_marker, json.dumps({"job": name, "reason": "pending-timeout"}),
                                       "application/json")
                    notes.fallback = "pending-timeout"
                    break
                if status.state in (JobState.FAILED, JobState.EXPIRED) and not answered and not failed:
                    # the whole job failed (bad model, permissions, quota): another round would fail alike
                    # (a job cancelled by an interrupt is not: the next round submits a new one)
                    reason = f"batch job {status.state.value}: {status.error or 'no rows answered'}"
                    for ex_id in round_ids - done.keys():
                        last_failure.setdefault(ex_id, reason)
                    log.warning("%s: %s", name, reason)
                    if online is not None and options.fallback_online:
                        storage.write_text(fallback_marker, json.dumps({"job": name, "reason": reason}),
                                           "application/json")
                        notes.fallback = reason
                    else:
                        online = None  # batch_fallback_online=false: these examples end as errors
                    break
            else:
                if any(ex.id not in done for ex in examples) and online is not None:
                    notes.fallback = "max-rounds"
        finally:
            ckpt.close()
        if storage.exists(fallback_marker) and notes.fallback is None:
            notes.fallback = json.loads(storage.read_text(fallback_marker)).get("reason", "pending-timeout")

    todo = [ex for ex in examples if ex.id not in done]
    if todo and online is not None:
        log.info("%d example(s) left after batch (%s): evaluating them online", len(todo), notes.fallback)
        notes.online_examples = len(todo)
        for r in online(todo):
            done[r.id] = r
    results = []
    for ex in examples:
        if ex.id in done:
            results.append(done[ex.id])
            continue
        prompt = prompt_of(ex)
        reason = last_failure.get(ex.id, "no prediction row came back")
        results.append(ExampleResult(id=ex.id, model=model, prompt_chars=len(prompt), reference=ex.output_text,
                                     error=f"batch row failed: {reason}", error_kind="BatchRowFailed",
                                     attempts=options.max_rounds))
    return results, notes


__all__ = ["ID_LABEL", "BatchNotes", "BatchOptions", "BatchPendingTimeout", "batch_key",
           "evaluate_batch", "wait_for_job"]
