"""The one shape of progress callback that long work reports through, and a terminal display of it.

`on_progress(done, total, info)`: `done` units of `total` (None when unknown: a download without a
Content-Length), `info` a small dict of counters worth showing (errors, problems, ...). The domain
calls it; a task passes one that updates a Prefect progress artifact, so `sftflow/` never imports
Prefect to report progress. A callback that raises must not stop the work it reports on.

`TerminalProgress` is such a callback for a terminal user: a log line every ~10 s or 10 %, and a
bar when stderr is a terminal (evaluating 1,000 examples at 300 rpm otherwise shows nothing for
minutes). `fan_out` hands one progress to several callbacks (the artifact and the terminal).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Any

ProgressFn = Callable[[int, int | None, dict[str, Any]], None]


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def batch_note(info: dict[str, Any]) -> str | None:
    """`batch job round 1 RUNNING: 120 answered, 3 failed, 377 to go`, or None outside batch mode."""
    if info.get("mode") != "batch" or not info.get("state"):
        return None
    stats = "" if "succeeded" not in info else (
        f": {info['succeeded']} answered, {info.get('failed', 0)} failed, {info.get('incomplete', 0)} to go")
    return f"batch job round {info.get('round', 1)} {info['state']}{stats}"


def progress_line(label: str, done: int, total: int, info: dict[str, Any], rate: float | None) -> str:
    """`base: 420/1000 (42%), 5.1/s, 3 errors, 7 retries, ETA 1m54s` (+ the batch job's state and stats)."""
    pct = 100.0 * done / total if total else 100.0
    parts = [f"{label}: {done}/{total} ({pct:.0f}%)"]
    if rate is not None and rate > 0:
        parts.append(f"{rate:.1f}/s" if rate >= 0.1 else f"{rate * 60:.1f}/min")
    parts.append(f"{info.get('errors', 0)} errors")
    parts.append(f"{info.get('retries', 0)} retries")
    if rate and rate > 0 and done < total:
        parts.append(f"ETA {_duration((total - done) / rate)}")
    line = ", ".join(parts)
    note = batch_note(info)
    return f"{line}; {note}" if note else line


class TerminalProgress:
    """An on_progress callback that logs a line every `every_s` seconds or `every_pct` percent,
    and redraws a one-line bar on `stream` when it is a terminal (`bar=None`: decide by isatty)."""

    def __init__(self, label: str, log: Callable[[str], None], *, every_s: float = 10.0, every_pct: float = 10.0,
                 stream: IO[str] | None = None, bar: bool | None = None, clock: Callable[[], float] = time.monotonic):
        self.label, self._log, self._clock = label, log, clock
        self.every_s, self.every_pct = every_s, every_pct
        self._stream = stream if stream is not None else sys.stderr
        self.bar = bar if bar is not None else bool(getattr(self._stream, "isatty", lambda: False)())
        self._start: float | None = None
        self._start_done = 0
        self._last_log = -float("inf")
        self._last_pct = -float("inf")
        self._last_state: Any = None
        self._finished = False

    def __call__(self, done: int, total: int | None, info: dict[str, Any] | None = None) -> None:
        if not total or self._finished:
            return
        info = info or {}
        now = self._clock()
        if self._start is None:
            self._start, self._start_done = now, done
        elapsed = now - self._start
        rate = (done - self._start_done) / elapsed if elapsed > 0 and done > self._start_done else None
        line = progress_line(self.label, done, total, info, rate)
        pct = 100.0 * done / total
        state = info.get("state")
        if (now - self._last_log >= self.every_s or pct - self._last_pct >= self.every_pct or done >= total
                or state != self._last_state):
            if self.bar:
                self._stream.write("\r\033[K")
            self._log(line)
            self._last_log, self._last_pct, self._last_state = now, pct, state
        if self.bar:
            width = 30
            filled = int(width * done / total)
            self._stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {line}"[:200])
            if done >= total:
                self._stream.write("\n")
            self._stream.flush()
        self._finished = done >= total


def fan_out(*callbacks: ProgressFn | None) -> ProgressFn:
    """One on_progress callback that calls each given one (None entries are skipped)."""
    live = [c for c in callbacks if c is not None]

    def call(done: int, total: int | None, info: dict[str, Any] | None = None) -> None:
        for c in live:
            c(done, total, info or {})

    return call
