"""Pacing of requests inside one process: a rate limiter shared by threads, and jittered backoff.

The one home for pacing: the evaluation engine (generation requests) and the countTokens counter
(sftflow.cost.token_count) both use it.

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
from collections.abc import Callable


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
