"""What the command line needs from Prefect itself: a `watch:` line when a run starts, Prefect's console logging
set up early enough to be adjusted, and its temporary server out of reach of signals sent to the command's process
group (sftflow/ stays free of Prefect imports)."""

from __future__ import annotations

import signal
import subprocess
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


class _OwnSession:
    """`subprocess` as Prefect's server module sees it while the temporary server starts: the server gets a
    session of its own (a SIGTERM or Ctrl-C sent to the command's process group does not reach it, so the
    interrupted run can still record its end there) and, on Linux, SIGTERM when the command dies (even by
    SIGKILL, so it is never left behind)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    @staticmethod
    def Popen(*args: Any, **kwargs: Any) -> subprocess.Popen:  # noqa: N802 - subprocess's name
        prctl = _prctl()
        die_with_parent = (lambda: prctl(1, signal.SIGTERM)) if prctl else None  # 1: PR_SET_PDEATHSIG
        return subprocess.Popen(*args, start_new_session=True, preexec_fn=die_with_parent, **kwargs)


def _prctl() -> Any:
    """libc's prctl on Linux, looked up here in the parent (the forked child only calls it), else None."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def start_temporary_server() -> None:
    """Start Prefect's temporary (ephemeral) server now, in a session of its own, instead of on the first API
    call. Prefect keeps one per process (SubprocessASGIServer), so every client of this process uses this one,
    and stops it at exit as before. Without its own session, a SIGTERM to the process group (a supervisor, a
    closing terminal) killed it at once and the interrupted run spent minutes retrying it, ending in
    `ConnectError ... Connection refused`."""
    import prefect.server.api.server as server_module
    from prefect.settings import get_current_settings

    # Prefect internals (pinned in constraints.txt): where they change, Prefect starts its server itself, as before.
    if not hasattr(server_module, "SubprocessASGIServer") or not hasattr(server_module, "subprocess"):
        return
    server = server_module.SubprocessASGIServer()
    if server.running or not get_current_settings().server.ephemeral.enabled:
        return
    plain = server_module.subprocess
    server_module.subprocess = _OwnSession()  # type: ignore[assignment]
    try:
        server.start()
    finally:
        server_module.subprocess = plain
