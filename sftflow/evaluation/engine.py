"""Concurrent, rate-limited, retrying, resumable generation + ROUGE scoring of a test set.

One call of `evaluate` answers every test example with one model and scores the answer.
Each finished example is appended to a JSONL checkpoint (fsync'd per line), so a killed run
resumes where it stopped and asks the model only for the examples that are missing or errored.
One process at a time owns a checkpoint: locally an exclusive `flock` on `<checkpoint>.lock` (the
kernel drops it when its holder dies, even by SIGKILL); in a bucket a lease object that every machine
sees (sftflow.infra.lease: a dead holder blocks for at most the lease's TTL). A second one fails fast
naming the holder.

An evaluation with errored examples is not a success: `check_error_rate` turns too many errors
into `EvaluationFailed` with one line per error kind (e.g. `8/10 examples: 401 UNAUTHENTICATED: …`).

Requests are paced by `sftflow.infra.pacing` (the rate limiter and the backoff, shared with the
countTokens counter); see there why a client-side limiter rather than Prefect's limits.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sftflow.backends.base import Generation, GenerationParams, Generator
from sftflow.evaluation.checkpoint import checkpoint_lock, open_checkpoint
from sftflow.data.testset import TestExample
from sftflow.errors import BackendError, CheckpointError, EvaluationFailed, TransientError
from sftflow.infra.pacing import RateLimiter, Retrier, run_concurrently
from sftflow.infra.progress import ProgressFn
from sftflow.evaluation.results import ExampleResult

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- evaluation


@dataclass
class _Counters:
    errors: int = 0
    retries: int = 0
    blocked: int = 0
    empty: int = 0
    resumed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def info(self) -> dict[str, Any]:
        with self.lock:
            return {"errors": self.errors, "retries": self.retries, "blocked": self.blocked,
                    "empty": self.empty, "resumed": self.resumed}

    def count(self, r: ExampleResult) -> None:
        with self.lock:
            self.errors += r.error is not None
            self.blocked += r.blocked
            self.empty += r.empty


def evaluate(
    generator: Generator,
    examples: Sequence[TestExample],
    *,
    params: GenerationParams,
    checkpoint: str | os.PathLike[str],  # a local JSONL file, or a gs:// folder (sftflow.evaluation.checkpoint)
    concurrency: int,
    rpm: float,
    max_attempts: int,
    on_progress: ProgressFn | None = None,
    sleep: Callable[[float], None] = time.sleep,
    backoff_base: float = 1.0,
    backoff_cap: float = 60.0,
    prompt_of: Callable[[TestExample], str] | None = None,
    seed: int | None = None,
    retry_after_cap: float = 120.0,
    lease_ttl: float = 60.0,
) -> list[ExampleResult]:
    """Answer and score every example; return one result per example, in example order.

    - `concurrency` worker threads; request starts paced by `RateLimiter(rpm)` (every try,
      retries included, takes a slot: quotas count requests).
    - `TransientError` → retry after `backoff_delay(...)` seconds (passed to `sleep`) up to
      `max_attempts` tries, then the example is recorded with `error` set. When the error
      carries the server's `Retry-After`, the retry waits at least that long (at most
      `retry_after_cap`) and no other worker starts a request before then either. `BackendError`
      (or any other exception from the generator) → recorded with `error`, no retry.
    - Examples already in `checkpoint` without an error are not asked again; errored ones are.
      The checkpoint is per model: one holding another model's results raises CheckpointError;
      one that another process is using raises CheckpointBusy (see `CheckpointLock`).
    - `on_progress(done, total, {"errors", "retries", "blocked", "empty", "resumed"})` is
      called from the calling thread, once at the start and after each example.
    - The prompt is `example.input_text` unless `prompt_of` is given.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency: must be >= 1, got {concurrency}")
    if max_attempts < 1:
        raise ValueError(f"max_attempts: must be >= 1, got {max_attempts}")
    _check_unique_ids(examples)
    prompt_of = prompt_of or (lambda ex: ex.input_text)

    with checkpoint_lock(checkpoint, lease_ttl) as guard:
        return _evaluate_locked(generator, examples, params=params, checkpoint=open_checkpoint(checkpoint, guard),
                                concurrency=concurrency, rpm=rpm, max_attempts=max_attempts,
                                on_progress=on_progress, sleep=sleep, backoff_base=backoff_base,
                                backoff_cap=backoff_cap, prompt_of=prompt_of, seed=seed,
                                retry_after_cap=retry_after_cap)


def _evaluate_locked(generator: Generator, examples: Sequence[TestExample], *, params: GenerationParams,
                     checkpoint: Any, concurrency: int, rpm: float, max_attempts: int,
                     on_progress: ProgressFn | None, sleep: Callable[[float], None], backoff_base: float,
                     backoff_cap: float, prompt_of: Callable[[TestExample], str], seed: int | None,
                     retry_after_cap: float) -> list[ExampleResult]:
    model = generator.model
    ckpt = checkpoint
    done = ckpt.load()
    others = sorted({r.model for r in done.values() if r.model != model})
    if others:
        raise CheckpointError(
            f"{ckpt.path}: holds results of model(s) {', '.join(others)}, not {model}; "
            "use one checkpoint per model"
        )
    results: dict[str, ExampleResult] = {
        ex.id: done[ex.id] for ex in examples if ex.id in done and done[ex.id].error is None
    }
    todo = [ex for ex in examples if ex.id not in results]
    counters = _Counters(resumed=len(results))
    for r in results.values():
        counters.count(r)
    total = len(examples)

    def report() -> None:
        if on_progress is None:
            return
        try:
            on_progress(len(results), total, counters.info())
        except Exception:  # a failing progress display must not stop the evaluation
            log.warning("on_progress callback failed", exc_info=True)

    report()
    if not todo:
        return [results[ex.id] for ex in examples]

    def retried() -> None:
        with counters.lock:
            counters.retries += 1

    ask = Retrier(RateLimiter(rpm), max_attempts=max_attempts, sleep=sleep, backoff_base=backoff_base,
                  backoff_cap=backoff_cap, retry_after_cap=retry_after_cap, seed=seed, on_retry=retried)

    def run_one(ex: TestExample) -> ExampleResult:
        prompt = prompt_of(ex)
        res = ExampleResult(id=ex.id, model=model, prompt_chars=len(prompt), reference=ex.output_text)
        gen, exc, res.attempts = ask(lambda: generator.generate(prompt, params))
        if isinstance(exc, TransientError):
            res.error, res.error_kind = f"TransientError after {res.attempts} attempts: {exc}", exc.kind
        elif isinstance(exc, BackendError):
            res.error, res.error_kind = f"BackendError: {exc}", exc.kind
        elif exc is not None:  # an unmapped SDK error must not sink the whole run
            log.error("example %s: unexpected error from %s", ex.id, model, exc_info=exc)
            res.error, res.error_kind = f"{type(exc).__name__}: {exc}", type(exc).__name__
        else:
            fill_result(res, gen)
        ckpt.append(res)
        counters.count(res)
        return res

    def done(r: ExampleResult) -> None:
        results[r.id] = r
        report()

    try:
        run_concurrently(todo, run_one, concurrency=concurrency, on_done=done, name="sftflow-eval")
    finally:
        ckpt.close()
    return [results[ex.id] for ex in examples]


def fill_result(res: ExampleResult, gen: Generation) -> None:
    """Score an answer into its record (online and batch answers alike: one scoring path)."""
    res.blocked = bool(gen.blocked)
    res.output = "" if res.blocked else (gen.text or "")
    res.finish_reason = gen.finish_reason
    res.latency_s = gen.latency_s
    res.prompt_tokens = gen.prompt_tokens
    res.output_tokens = gen.output_tokens
    res.score()


def error_lines(results: Sequence[ExampleResult]) -> list[str]:
    """One line per error kind, most frequent first: `8/10 examples: 401 UNAUTHENTICATED: <message>`."""
    total = len(results)
    by_kind: dict[str, list[ExampleResult]] = {}
    for r in results:
        if r.error is not None:
            kind = r.error_kind or r.error.split(":", 1)[0]
            by_kind.setdefault(kind, []).append(r)
    lines = []
    for kind, rs in sorted(by_kind.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        detail = rs[0].error.split(f"{kind}: ", 1)[-1] if kind in rs[0].error else rs[0].error
        detail = " ".join(detail.split())
        detail = detail if len(detail) <= 200 else detail[:199] + "…"
        lines.append(f"{len(rs)}/{total} examples: {kind}: {detail}")
    return lines


def check_error_rate(results: Sequence[ExampleResult], max_error_rate: float, model: str) -> list[str]:
    """Raise EvaluationFailed when more than `max_error_rate` of the examples errored.

    Returns `error_lines(results)` (empty when nothing errored) for the caller to report.
    """
    errors = sum(r.error is not None for r in results)
    if not errors:
        return []
    lines = error_lines(results)
    if errors > max_error_rate * len(results):
        raise EvaluationFailed("\n".join([
            f"evaluation of {model} failed: {errors}/{len(results)} examples ended in errors "
            f"(more than max_error_rate={max_error_rate:g}); fix the cause and rerun — only the "
            "errored examples are asked again",
            *lines,
        ]))
    return lines


def _check_unique_ids(examples: Sequence[TestExample]) -> None:
    seen: dict[str, int] = {}
    for ex in examples:
        if ex.id in seen:
            raise ValueError(f"example id {ex.id!r} appears twice (lines {seen[ex.id]} and {ex.line})")
        seen[ex.id] = ex.line


__all__ = [
    "check_error_rate",
    "error_lines",
    "evaluate",
    "fill_result",
]
