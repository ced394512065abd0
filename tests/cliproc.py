"""A `sftflow` CLI run in a child process that tests can kill mid-way, and its output afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def _default_sigint() -> None:
    """A shell that starts CI in the background leaves SIGINT ignored, and Python then never raises
    KeyboardInterrupt; restore the default so the child behaves as in a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(cmd: list[str], env: dict[str, str], log_dir: Path) -> subprocess.Popen:
    """`cmd` in its own session (a flow process killed by a signal can orphan Prefect's temporary API
    server, which `finish` then stops with the whole group), its output in a log under `log_dir`."""
    log = open(log_dir / f"cli-{time.monotonic_ns()}.log", "w+")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=_default_sigint)
    proc.log = log
    return proc


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    """Wait for `proc`, kill whatever its session left behind, and return everything it printed."""
    try:
        proc.wait(timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.log.seek(0)
    return proc.log.read()
