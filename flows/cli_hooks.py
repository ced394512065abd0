"""What the command line needs from Prefect itself: a `watch:` line when a run starts, and Prefect's
console logging set up early enough to be adjusted (sftflow/ stays free of Prefect imports)."""

from __future__ import annotations

import sys
from typing import Any

from prefect.logging.configuration import ensure_logging_setup
from prefect.settings import PREFECT_UI_URL


def _print_watch(flow: Any, flow_run: Any, state: Any) -> None:
    """on_running hook: where to watch this run in the UI (PREFECT_UI_URL derives from the API URL)."""
    if ui := PREFECT_UI_URL.value():
        print(f"watch: {ui.rstrip('/')}/runs/flow-run/{flow_run.id}", file=sys.stderr, flush=True)


def watched(flow: Any, watch: bool) -> Any:
    """`flow`, printing its UI address when it starts running if a server holds the run."""
    return flow.with_options(on_running=[_print_watch]) if watch else flow


def setup_logging() -> None:
    """Create Prefect's console handlers now, so the CLI can adjust their formatting."""
    ensure_logging_setup()
