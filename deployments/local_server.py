"""Start and stop a throwaway `prefect server` (and workers) as child processes: used by the e2e test
and the cache benchmark, so that neither pays the ~11 s ephemeral-server start of every new process.

    with local_prefect_server(home) as server:     # server.url = http://127.0.0.1:PORT/api
        subprocess.run([...], env=server.env)       # any Prefect client in env talks to it

Processes get their own process group and are stopped SIGTERM → SIGINT → SIGKILL (a worker whose
server is already gone needs the SIGINT): stop workers before the server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

PREFECT = str(Path(sys.executable).parent / "prefect")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 150.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited {proc.returncode}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"prefect server not healthy after {timeout:.0f} s:\n{tail(log)}")


@contextmanager
def local_prefect_server(home: Path, port: int | None = None, extra_env: dict[str, str] | None = None
                         ) -> Iterator[LocalServer]:
    """A `prefect server` on 127.0.0.1 with its own PREFECT_HOME (a fresh database); stopped on exit."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": url,
        "PREFECT_UI_API_URL": url,  # else the UI asks port 4200 and shows "Something went wrong"
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **(extra_env or {}),
    }
    log = home / "server.log"
    server = LocalServer(url=url, ui=f"http://127.0.0.1:{port}", env=env, home=home)
    proc = start([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, log, cwd=home)
    server.procs.append(proc)
    try:
        wait_healthy(url, proc, log)
        yield server
    finally:
        for p in list(server.procs):
            stop(p)
