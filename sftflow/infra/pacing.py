"""Pacing of requests inside one process: a rate limiter shared by threads, and jittered backoff.

The one home for pacing: the evaluation engine (generation requests), the judge (evaluateInstances)
and the countTokens counter (sftflow.cost.token_count) all use it, and the thread pool that runs
their requests concurrently (run_concurrently).

Why a client-side limiter, not Prefect's global concurrency limits: `prefect.concurrency`'s
`rate_limit` needs a Prefect API and a limit created beforehand (without it, it only warns
and does not throttle), and measured throughput stayed below the configured rate. The pacing
that matters here is of HTTP requests inside one process, which a lock and a clock do exactly
and without a server. (sftflow/ must not import Prefect anyway.)
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from sftflow.errors import TransientError


class RateLimiter:
    """Spaces request starts at least 60/rpm seconds apart, across all threads.

    A token bucket of depth `burst` (default 1: no bursts, the steadiest load on a per-minute
    quota). Each caller reserves the next free slot under a lock and sleeps outside it, so
    waiting threads do not serialise on the lock.
    """

    def __init__(self, rpm: float, burst: int = 1, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if rpm <= 0:
            raise ValueError(f"rpm: must be > 0, got {rpm}")
        if burst < 1:
            raise ValueError(f"burst: must be >= 1, got {burst}")
        self.interval = 60.0 / rpm
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next: float | None = None  # slot of the next request once the bucket is empty

    def acquire(self) -> float:
        """Block until a request may start; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            # a bucket holds at most `burst` tokens: idle time beyond that is not banked
            earliest = now - (self.burst - 1) * self.interval
            slot = earliest if self._next is None else max(self._next, earliest)
            self._next = slot + self.interval
        wait = slot - now
        if wait > 0:
            self._sleep(wait)
        return max(wait, 0.0)

    def defer(self, seconds: float) -> None:
        """Start no request for `seconds` from now (a server's Retry-After holds for everyone)."""
        with self._lock:
            until = self._clock() + seconds
            self._next = until if self._next is None else max(self._next, until)


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: U(0, min(cap, base * 2^(attempt-1))).

    Full jitter spreads the retries of many workers that failed together (one 429 burst)
    instead of sending them back in lock-step.
    """
    return rng.uniform(0.0, min(cap, base * (2 ** (attempt - 1))))


class Retrier:
    """One request with the evaluation's rules, for callers that are not `evaluate` (e.g. the pairwise judge):
    every try paced by `limiter`; `TransientError` retried up to `max_attempts` tries with `backoff_delay`
    (a server's Retry-After, at most `retry_after_cap`, is waited for and holds every worker); anything
    else ends the request at once. `__call__` returns (value, None, tries) or (None, exception, tries)."""

    def __init__(self, limiter: RateLimiter, *, max_attempts: int, sleep: Callable[[float], None] = time.sleep,
                 backoff_base: float = 1.0, backoff_cap: float = 60.0, retry_after_cap: float = 120.0,
                 seed: int | None = None, on_retry: Callable[[], None] | None = None):
        if max_attempts < 1:
            raise ValueError(f"max_attempts: must be >= 1, got {max_attempts}")
        self.limiter, self.max_attempts, self.sleep = limiter, max_attempts, sleep
        self.backoff_base, self.backoff_cap, self.retry_after_cap = backoff_base, backoff_cap, retry_after_cap
        self.on_retry = on_retry
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()

    def __call__(self, fn: Callable[[], Any]) -> tuple[Any, BaseException | None, int]:
        for attempt in range(1, self.max_attempts + 1):
            self.limiter.acquire()
            try:
                return fn(), None, attempt
            except TransientError as exc:
                if attempt == self.max_attempts:
                    return None, exc, attempt
                if self.on_retry is not None:
                    self.on_retry()
                with self._rng_lock:
                    delay = backoff_delay(attempt, self.backoff_base, self.backoff_cap, self._rng)
                if exc.retry_after is not None:
                    asked = min(exc.retry_after, self.retry_after_cap)
                    self.limiter.defer(asked)
                    delay = max(delay, asked)
                self.sleep(delay)
            except Exception as exc:  # noqa: BLE001 - permanent: the caller records it
                return None, exc, attempt
        raise AssertionError("unreachable")  # pragma: no cover


T = TypeVar("T")
R = TypeVar("R")


def run_concurrently(items: Sequence[T], work: Callable[[T], R], *, concurrency: int,
                     on_done: Callable[[R], None], name: str) -> None:
    """work(item) for every item on up to `concurrency` threads; on_done(result) in the calling thread
    as each one finishes (so progress and bookkeeping need no lock). On an error or Ctrl-C, items not
    yet started are cancelled and the running ones finish: their results are already checkpointed."""
    if not items:
        return
    pool = ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(items))), thread_name_prefix=name)
    try:
        pending: set[Future[R]] = {pool.submit(work, it) for it in items}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                on_done(fut.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
