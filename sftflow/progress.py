"""The one shape of progress callback that long work reports through.

`on_progress(done, total, info)`: `done` units of `total` (None when unknown: a download without a
Content-Length), `info` a small dict of counters worth showing (errors, problems, ...). The domain
calls it; a task passes one that updates a Prefect progress artifact, so `sftflow/` never imports
Prefect to report progress. A callback that raises must not stop the work it reports on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ProgressFn = Callable[[int, int | None, dict[str, Any]], None]
