"""How the command line ends on Ctrl-C and on SIGTERM: the same way, with one line saying what was interrupted.

Ctrl-C raises KeyboardInterrupt in the main thread; SIGTERM (a supervisor stopping the command, `kill`, a closing
session) raises `Terminated`, a KeyboardInterrupt, so it takes the same path: a job being awaited is cancelled or
left running as cancel_job_on_interrupt says (sftflow.tuning.polling.cancel_on_interrupt), the runs record their
end, and the command prints `sftflow: interrupted…` and exits 130 (Ctrl-C) or 143 (SIGTERM). During a flow run
Prefect's own SIGTERM handler comes first (its TerminationSignal crashes the run on the server), then hands the
signal back to ours. Without a handler of ours, SIGTERM ended the command at once: no line, Prefect's temporary
server left running.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM, taken as Ctrl-C is."""


_SIGTERM: list[bool] = []  # set when SIGTERM came


def _on_sigterm(signum: int, frame: Any) -> None:
    """Raise Terminated in the main thread; a second SIGTERM while it winds down ends the process at once."""
    from sftflow.tuning import polling

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    polling.INTERRUPT_CAUSE[0] = "SIGTERM"
    _SIGTERM.append(True)
    raise Terminated


def take_sigterm() -> Callable[[], None]:
    """Handle SIGTERM as above until the returned function puts the previous handler back. Outside the main
    thread (a caller embedding the CLI) signals cannot be handled: its SIGTERM stays its own."""
    from sftflow.tuning import polling

    _SIGTERM.clear()
    polling.INTERRUPT_CAUSE[0] = "Ctrl-C"
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:
        return lambda: None

    def restore() -> None:
        if signal.getsignal(signal.SIGTERM) in (_on_sigterm, signal.SIG_DFL):
            signal.signal(signal.SIGTERM, previous)
    return restore


def line_and_code(command: str | None) -> int:
    """Print what the interrupt did (one line per job it touched, else what stopped); the exit code."""
    from sftflow.tuning.polling import INTERRUPTED

    if _SIGTERM:
        for line in INTERRUPTED or [f"sftflow {command or ''}".rstrip() + " stopped"]:
            print(f"sftflow: interrupted by SIGTERM: {line}", file=sys.stderr)
        return 143
    for line in INTERRUPTED or [""]:
        print(f"sftflow: interrupted{': ' + line if line else ''}", file=sys.stderr)
    return 130
