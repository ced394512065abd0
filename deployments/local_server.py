"""A throwaway `prefect server` (and workers) for one block of code: used by the e2e test and the cache
benchmark, so that neither pays the ~11 s ephemeral-server start of every new process. The server is
started and stopped by sftflow.infra.prefect_server (the same code as `sftflow server start|stop`).

    with local_prefect_server(home) as server:     # server.url = http://127.0.0.1:PORT/api
        subprocess.run([...], env=server.env)       # any Prefect client in env talks to it

Workers get their own process group and are stopped SIGTERM → SIGINT → SIGKILL (a worker whose
server is already gone needs the SIGINT), before the server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sftflow.infra import prefect_server

PREFECT = str(Path(sys.executable).parent / "prefect")


def free_port() -> int:
    return prefect_server.free_port(None)


def start(cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    """Start `cmd` in its own process group with stdout+stderr to `log`."""
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGINT, then SIGKILL to the process group of a process `start` made."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGINT, 10), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(no log)"


@dataclass
class LocalServer:
    url: str  # the API URL: http://127.0.0.1:PORT/api
    ui: str  # the UI's base URL
    env: dict[str, str]  # os.environ + PREFECT_HOME / PREFECT_API_URL / PREFECT_UI_API_URL for clients
    home: Path
    procs: list[subprocess.Popen] = field(default_factory=list)

    def start_worker(self, pool: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen:
        log = self.home / f"worker-{pool}-{len(self.procs)}.log"
        proc = start([PREFECT, "worker", "start", "--pool", pool], env or self.env, log, cwd=cwd or self.home)
        proc.log = log  # type: ignore[attr-defined]
        self.procs.insert(0, proc)  # workers stop before the server
        return proc


@contextmanager
def local_prefect_server(home: Path, port: int | None = None, extra_env: dict[str, str] | None = None
                         ) -> Iterator[LocalServer]:
    """A `prefect server` on 127.0.0.1 with its own PREFECT_HOME (a fresh database); stopped on exit."""
    home = Path(home).resolve()
    rec, _ = prefect_server.start(home, port=port or free_port(), extra_env=extra_env)
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": rec.api_url,
        "PREFECT_UI_API_URL": rec.api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **(extra_env or {}),
    }
    server = LocalServer(url=rec.api_url, ui=rec.ui_url, env=env, home=home)
    try:
        yield server
    finally:
        for p in list(server.procs):
            stop(p)
        prefect_server.stop(home)
