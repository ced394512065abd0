"""A long-lived local Prefect server that every `sftflow` command can reuse, and the choice of API.

Without a server each command pays Prefect's temporary-server start (~11 s) and its runs vanish
when it ends. `start` launches `prefect server start` detached (its own session and process group,
`PREFECT_HOME` = `<local_root>/prefect-server`, so runs and their history persist there) and
records it in `server.json`; later commands find it through `choose_api`.

The record is never trusted on its own: a server counts as running only if the recorded pid
still names the same process (its creation time matches, so a reused pid is not mistaken for it)
and `/api/health` answers. Starts and stops hold one lock file (`fcntl.flock`), so two `start`s
at once make one server. This module runs `prefect` as a subprocess and talks HTTP; it does not
import Prefect (sftflow/ stays Prefect-free and `import prefect` costs seconds).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import psutil

from sftflow.errors import ServerError

HOST = "127.0.0.1"
DEFAULT_PORT = 4200  # Prefect's own default: the address users know, used when it is free
RECORD = "server.json"
LOCK = "server.lock"
LOG = "server.log"


def server_home(local_root: Path | str) -> Path:
    """PREFECT_HOME of the local server: its database, log and record live here."""
    return Path(local_root).resolve() / "prefect-server"


@dataclass(frozen=True)
class ServerRecord:
    pid: int
    port: int
    started_at: float  # wall-clock epoch seconds, for uptime
    create_time: float  # the process's creation time (psutil): a reused pid has another one
    home: str
    host: str = HOST

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.ui_url}/api"


def read_record(home: Path) -> ServerRecord | None:
    try:
        data = json.loads((home / RECORD).read_text())
        return ServerRecord(**data)
    except (OSError, ValueError, TypeError):
        return None  # no record, or a torn/foreign one: treated as absent (and replaced by start)


def _write_record(home: Path, rec: ServerRecord) -> None:
    """Write-then-rename, so a reader sees the old record or the new one, never half of one."""
    tmp = home / f".{RECORD}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(asdict(rec), f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, home / RECORD)


def _remove_record(home: Path) -> None:
    (home / RECORD).unlink(missing_ok=True)


def process_alive(rec: ServerRecord) -> bool:
    """True if the recorded pid is still the process `start` launched (not dead, not a zombie, not reused)."""
    try:
        p = psutil.Process(rec.pid)
        if abs(p.create_time() - rec.create_time) > 0.5:
            return False  # the pid now names another process
        if p.status() == psutil.STATUS_ZOMBIE:
            _reap(rec.pid)
            return False
        return True
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


#: Servers this process launched: kept so they are reaped here (no zombie, no ResourceWarning)
#: when a long-lived caller (a test session, a benchmark) stops them itself.
_CHILDREN: dict[int, subprocess.Popen] = {}


def _reap(pid: int) -> None:
    """Collect the exit status when the server is our own child (a test or benchmark started it)."""
    proc = _CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        del _CHILDREN[pid]


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as r:
            return r.status == 200
    except (OSError, ValueError):
        return False


def port_open(port: int, host: str = HOST) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def free_port(preferred: int | None = DEFAULT_PORT) -> int:
    """`preferred` if nothing listens there and it can be bound, else a port the OS picks."""
    if preferred:
        with socket.socket() as s:
            try:
                s.bind((HOST, preferred))
                return preferred
            except OSError:
                pass
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@contextmanager
def _locked(home: Path) -> Iterator[None]:
    """One start/stop at a time per server home, across processes (released if the holder dies)."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / LOCK, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@dataclass(frozen=True)
class Status:
    state: Literal["running", "not-answering", "stale", "stopped"]
    record: ServerRecord | None = None
    detail: str = ""

    @property
    def running(self) -> bool:
        return self.state == "running"


def status(home: Path, timeout: float = 2.0) -> Status:
    """What the record says, checked: running (alive and healthy), not-answering, stale or stopped."""
    rec = read_record(home)
    if rec is None:
        return Status("stopped")
    if not process_alive(rec):
        return Status("stale", rec, f"recorded pid {rec.pid} is gone or now another process")
    if not healthy(rec.api_url, timeout):
        return Status("not-answering", rec, f"pid {rec.pid} is alive but {rec.api_url}/health does not answer")
    return Status("running", rec)


def running_elsewhere(home: Path, timeout: float = 2.0) -> list[ServerRecord]:
    """The other sftflow servers running on this machine, for another storage root than `home`'s. No list of
    them is kept: `start` launches each in its own home folder and records its pid there, so a `prefect server
    start` process whose working folder holds a record naming it (and that answers) is one."""
    home = Path(home).resolve()
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info.get("cmdline") or []
        if not ("server" in cmd and "start" in cmd and any("prefect" in c for c in cmd)):
            continue
        try:
            where = Path(p.cwd())
        except (psutil.Error, OSError):
            continue  # gone meanwhile, or another user's
        if where == home:
            continue
        rec = read_record(where)
        if rec is not None and rec.pid == p.pid and process_alive(rec) and healthy(rec.api_url, timeout):
            found.append(rec)
    return sorted(found, key=lambda r: r.home)


def prefect_command() -> list[str]:
    """The `prefect` script next to this interpreter (the project's venv), else `python -m prefect`."""
    exe = Path(sys.executable).parent / "prefect"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "prefect"]


def server_env(home: Path, port: int, extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server process's environment: its own home and database, UI pointed at its own API."""
    env = dict(os.environ)
    for k in ("PREFECT_API_URL", "PREFECT_PROFILE", "PREFECT_PROFILES_PATH"):
        env.pop(k, None)  # a client setting inherited from the caller must not steer the server
    api = f"http://{HOST}:{port}/api"
    env.update({
        "PREFECT_HOME": str(home),
        # the UI asks PREFECT_UI_API_URL for data; without it, it asks port 4200 (prefect.md)
        "PREFECT_UI_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **(extra_env or {}),
    })
    return env


def start(home: Path, port: int | None = None, timeout: float = 180.0,
          extra_env: Mapping[str, str] | None = None) -> tuple[ServerRecord, bool]:
    """Start the server unless one recorded under `home` is running; return (record, started_now).

    `extra_env` adds settings to a newly started server's environment (e.g. PREFECT_LOGGING_LEVEL).
    A stale record (dead pid, reused pid) or a recorded server that no longer answers is replaced.
    Raises ServerError (with the log's tail) if the new server is not healthy within `timeout`.
    """
    home = Path(home).resolve()
    with _locked(home):
        st = status(home, timeout=5.0)
        if st.running:
            assert st.record is not None
            if port is None or port == st.record.port:
                return st.record, False
            raise ServerError(f"a local Prefect server already runs on port {st.record.port} for {home}; "
                              "stop it first (`sftflow server stop`) to move it to another port")
        if st.state == "not-answering":
            assert st.record is not None
            _terminate(st.record)
        _remove_record(home)
        return _spawn(home, port, timeout, extra_env), True


def _spawn(home: Path, port: int | None, timeout: float, extra_env: Mapping[str, str] | None) -> ServerRecord:
    chosen = port or free_port()
    if port and port_open(port):
        raise ServerError(f"port {port} is already in use; pick another with --port or leave it out")
    log = home / LOG
    cmd = [*prefect_command(), "server", "start", "--host", HOST, "--port", str(chosen)]
    with open(log, "ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} sftflow server start: port {chosen}\n".encode())
        out.flush()
        proc = subprocess.Popen(cmd, cwd=home, env=server_env(home, chosen, extra_env), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    _CHILDREN[proc.pid] = proc
    try:
        created = psutil.Process(proc.pid).create_time()
    except psutil.NoSuchProcess:
        created = 0.0
    rec = ServerRecord(pid=proc.pid, port=chosen, started_at=time.time(), create_time=created, home=str(home))
    _write_record(home, rec)  # recorded before the wait, so a `start` killed mid-wait leaves no orphan
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _remove_record(home)
            raise ServerError(f"prefect server exited with status {proc.returncode} during start-up; "
                              f"see {log}: {_tail(log)}")
        if healthy(rec.api_url):
            return rec
        time.sleep(0.25)
    _terminate(rec)
    _remove_record(home)
    raise ServerError(f"prefect server did not answer {rec.api_url}/health within {timeout:.0f} s "
                      f"(a busy machine? retry with a longer --timeout); see {log}")


def _tail(path: Path, n: int = 300) -> str:
    try:
        return " ".join(path.read_text(errors="replace")[-n:].split())
    except OSError:
        return "(no log)"


def stop(home: Path, grace: float = 20.0) -> ServerRecord | None:
    """Stop the recorded server (its whole process group) and remove the record.

    Returns the record of the server that was stopped, or None if none was running (a stale
    record is removed all the same). Raises ServerError if the port is still open afterwards.
    """
    home = Path(home).resolve()
    with _locked(home):
        rec = read_record(home)
        if rec is None:
            return None
        alive = process_alive(rec)
        if alive:
            _terminate(rec, grace)
        _remove_record(home)
        deadline = time.monotonic() + 10.0
        while port_open(rec.port, rec.host) and alive:
            if time.monotonic() > deadline:
                raise ServerError(f"port {rec.port} is still open after stopping pid {rec.pid}")
            time.sleep(0.2)
        return rec if alive else None


def _terminate(rec: ServerRecord, grace: float = 20.0) -> None:
    """SIGTERM to the server's process group, SIGKILL after `grace` seconds; waits until it is gone."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        if not process_alive(rec):
            break
        try:
            os.killpg(rec.pid, sig)  # start_new_session: the pid is the group's id
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and process_alive(rec):
            time.sleep(0.1)
    try:  # anything left in the group (a child uvicorn worker) goes too
        os.killpg(rec.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    _reap(rec.pid)


# --- which API a flow command talks to ------------------------------------------------------------

@dataclass(frozen=True)
class ApiChoice:
    """The API a command uses: `api_url` None means Prefect's temporary (ephemeral) server."""

    source: Literal["PREFECT_API_URL", "profile", "local-server", "ephemeral"]
    api_url: str | None = None
    note: str = ""  # a line worth telling the user (e.g. a recorded server that is gone)


def profile_api_url(environ: Mapping[str, str]) -> str | None:
    """PREFECT_API_URL from the active Prefect profile (`prefect config set ...`), read without Prefect."""
    home = Path(environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    path = Path(environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = environ.get("PREFECT_PROFILE") or data.get("active") or "ephemeral"
    value = (data.get("profiles") or {}).get(active, {}).get("PREFECT_API_URL")
    return str(value) if value else None


def choose_api(local_root: Path | str, mode: Literal["auto", "ephemeral"],
               environ: Mapping[str, str] | None = None) -> ApiChoice:
    """In order: PREFECT_API_URL (environment, then the active profile); else, in `auto` mode, the
    recorded local server if it answers its health check; else Prefect's temporary server."""
    env = os.environ if environ is None else environ
    if env.get("PREFECT_API_URL"):
        return ApiChoice("PREFECT_API_URL", env["PREFECT_API_URL"])
    if url := profile_api_url(env):
        return ApiChoice("profile", url)
    if mode == "ephemeral":
        return ApiChoice("ephemeral")
    home = server_home(local_root)
    if not (home / RECORD).exists():
        return ApiChoice("ephemeral")
    st = status(home, timeout=3.0)
    if st.running:
        assert st.record is not None
        return ApiChoice("local-server", st.record.api_url)
    return ApiChoice("ephemeral", note=f"the local Prefect server recorded in {home} is not usable "
                                       f"({st.detail}); using a temporary one — `sftflow server start` restarts it")
