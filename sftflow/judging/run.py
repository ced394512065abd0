"""Running pairs like an evaluation (sftflow.evaluation.engine): `concurrency` workers, every request paced by
one `RateLimiter(rpm)`, transient errors retried with backoff and Retry-After (`sftflow.infra.pacing.Retrier`), every judged
pair appended to a checkpoint (`JudgedPairs`: the evaluation's `Checkpoint` with judged pairs as records) under
the evaluation's `CheckpointLock`, so a kill loses at most the pairs in flight and a rerun asks only for the
pairs that are missing or errored. Each pair is asked in both orders (sftflow.judging.pairs)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sftflow.errors import BackendError, CheckpointError, TransientError
from sftflow.evaluation.checkpoint import Checkpoint, CheckpointLock
from sftflow.infra.pacing import RateLimiter, Retrier, run_concurrently
from sftflow.infra.progress import ProgressFn
from sftflow.judging.pairs import Judge, JudgeAnswer, JudgedPair, Pair, both_orders, pair_line, pairs_by_id, side_of

log = logging.getLogger(__name__)


class JudgedPairs(Checkpoint):
    """The judging checkpoint: the evaluation's append-only, fsync'd JSONL, with judged pairs as records."""

    encode = staticmethod(pair_line)
    decode = staticmethod(pairs_by_id)


@dataclass
class _Counters:
    errors: int = 0
    retries: int = 0
    resumed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def info(self) -> dict[str, Any]:
        with self.lock:
            return {"errors": self.errors, "retries": self.retries, "resumed": self.resumed}


def judge_one(judge: Judge, pair: Pair, ask: Callable[[Callable[[], Any]], tuple[Any, BaseException | None, int]]
              ) -> JudgedPair:
    """Both orders of `pair` through `ask` (a Retrier); an error in either order errors the pair."""
    out = JudgedPair(id=pair.id, judge=judge.name, baseline_rouge_l=pair.baseline_rouge_l,
                     candidate_rouge_l=pair.candidate_rouge_l)
    answers: list[JudgeAnswer] = []
    sides: list[str] = []
    for swapped, instance in zip((False, True), pair.orders()):
        answer, exc, tries = ask(lambda instance=instance: judge.judge(instance))
        out.requests += tries
        if exc is None:
            try:
                sides.append(side_of(answer.choice, swapped))
            except BackendError as bad:
                exc = bad
        if exc is not None:
            prefix = f"TransientError after {tries} attempts" if isinstance(exc, TransientError) else type(exc).__name__
            out.error = f"{prefix}: {exc}"
            out.error_kind = getattr(exc, "kind", None) or type(exc).__name__
            return out
        answers.append(answer)
    out.forward, out.backward = sides
    out.verdict, out.orders_disagree = both_orders(*sides)
    texts = [a.explanation for a in answers if a.explanation]
    out.explanation = texts[0] if len(set(texts)) <= 1 else f"{texts[0]} | swapped: {texts[1]}"
    confidences = [a.confidence for a in answers if a.confidence is not None]
    out.confidence = sum(confidences) / len(confidences) if confidences else None
    out.input_tokens = sum(a.input_tokens for a in answers)
    out.output_tokens = sum(a.output_tokens for a in answers)
    return out


def judge_pairs(judge: Judge, pairs: Sequence[Pair], *, checkpoint: str | Path, concurrency: int, rpm: float,
                max_attempts: int, on_progress: ProgressFn | None = None, sleep: Callable[[float], None] | None = None,
                backoff_base: float = 1.0, seed: int | None = None) -> list[JudgedPair]:
    """Every pair judged in both orders, in `pairs` order. Pairs already in `checkpoint` without an error are
    not asked again; a checkpoint of another judge raises CheckpointError, one in use CheckpointBusy."""
    if concurrency < 1:
        raise ValueError(f"concurrency: must be >= 1, got {concurrency}")
    ids = [p.id for p in pairs]
    if len(set(ids)) != len(ids):
        raise ValueError("pairs: an example id appears twice")
    with CheckpointLock(Path(checkpoint)):
        ckpt = JudgedPairs(Path(checkpoint))
        done = ckpt.load()
        others = sorted({r.judge for r in done.values() if r.judge != judge.name})
        if others:
            raise CheckpointError(f"{ckpt.path}: holds judgements of {', '.join(others)}, not {judge.name}; "
                                  "use one checkpoint per judge")
        results = {p.id: done[p.id] for p in pairs if p.id in done and done[p.id].error is None}
        todo = [p for p in pairs if p.id not in results]
        counters = _Counters(resumed=len(results))

        def report() -> None:
            if on_progress is not None:
                try:
                    on_progress(len(results), len(pairs), counters.info())
                except Exception:  # a failing progress display must not stop the judging
                    log.warning("on_progress callback failed", exc_info=True)

        def retried() -> None:
            with counters.lock:
                counters.retries += 1

        report()
        if not todo:
            return [results[i] for i in ids]
        extra = {} if sleep is None else {"sleep": sleep}
        ask = Retrier(RateLimiter(rpm), max_attempts=max_attempts, backoff_base=backoff_base, seed=seed,
                      on_retry=retried, **extra)

        def run(p: Pair) -> JudgedPair:
            r = judge_one(judge, p, ask)
            ckpt.append(r)
            with counters.lock:
                counters.errors += r.error is not None
            return r

        def done(r: JudgedPair) -> None:
            results[r.id] = r
            report()

        try:
            run_concurrently(todo, run, concurrency=concurrency, on_done=done, name="sftflow-judge")
        finally:
            ckpt.close()
    return [results[i] for i in ids]
