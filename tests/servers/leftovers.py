"""Find Prefect servers that a test session started and did not stop (the session-finish check).

Every process a test starts inherits SFTFLOW_TEST_SESSION (set in conftest.py), so a leftover
`prefect server start` is recognised by that marker in its environment, never by name alone:
servers of other sessions and users are left alone.
"""

from __future__ import annotations

import os
import signal

import psutil


def leftover_servers(session_id: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if not ("server" in cmd and "start" in cmd and any(c.endswith("prefect") for c in cmd)):
            continue
        try:
            if p.environ().get("SFTFLOW_TEST_SESSION") == session_id and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def stop_leftover_servers(session_id: str) -> list[str]:
    """Kill (whole process group) every server of this session still running; describe each."""
    out = []
    for p in leftover_servers(session_id):
        out.append(f"pid {p.pid}: {' '.join(p.cmdline())} (PREFECT_HOME={p.environ().get('PREFECT_HOME')})")
        try:
            os.killpg(os.getpgid(p.pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            p.kill()
    return out
