"""`sftflow server start|stop|status` and the API choice of flow commands, against real `prefect server`s.

Every server a test starts is stopped by its fixture or `finally`; conftest.py's session-finish
check fails the run if one is left all the same.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from sftflow.infra import prefect_server as ps

WATCH = re.compile(r"^watch: (http://[^/]+)/runs/flow-run/([0-9a-f-]{36})$", re.M)


def sftflow(*args: str, cwd: Path, env: dict | None = None, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sftflow.cli.main", *args], cwd=cwd, env=env or os.environ.copy(),
                          capture_output=True, text=True, timeout=timeout)


def api(url: str, path: str, body: dict) -> object:
    req = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def flow_run(api_url: str, run_id: str) -> dict | None:
    runs = api(api_url, "/flow_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})
    return runs[0] if runs else None


def flow_run_count(api_url: str) -> int:
    return api(api_url, "/flow_runs/count", {})


def server_processes(home: Path) -> list[psutil.Process]:
    """Live `prefect server` processes whose PREFECT_HOME is `home`."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "server" in cmd and "start" in cmd:
            try:
                if p.environ().get("PREFECT_HOME") == str(home) and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
    return out


def wait_gone(rec: ps.ServerRecord, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while ps.process_alive(rec) and time.monotonic() < deadline:
        time.sleep(0.1)


# --- no server needed ------------------------------------------------------------------------------

def _record(home: Path, pid: int, create_time: float, port: int = 9) -> ps.ServerRecord:
    rec = ps.ServerRecord(pid=pid, port=port, started_at=time.time(), create_time=create_time, home=str(home))
    home.mkdir(parents=True, exist_ok=True)
    ps._write_record(home, rec)
    return rec


def test_no_record_means_stopped_and_temporary_server(tmp_path):
    assert ps.status(ps.server_home(tmp_path)).state == "stopped"
    choice = ps.choose_api(tmp_path, "auto", environ={"PREFECT_HOME": str(tmp_path / "ph")})
    assert (choice.source, choice.api_url, choice.note) == ("ephemeral", None, "")


def test_record_of_a_reused_pid_is_stale_not_trusted(tmp_path):
    home = ps.server_home(tmp_path)
    me = psutil.Process()  # a live pid, but not the process the record was written for
    _record(home, me.pid, me.create_time() - 100)
    st = ps.status(home)
    assert st.state == "stale" and not st.running
    choice = ps.choose_api(tmp_path, "auto", environ={"PREFECT_HOME": str(tmp_path / "ph")})
    assert choice.source == "ephemeral" and choice.api_url is None
    assert "not usable" in choice.note and "sftflow server start" in choice.note


def test_record_of_a_dead_pid_is_stale(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    created = psutil.Process(proc.pid).create_time()
    proc.wait()
    home = ps.server_home(tmp_path)
    _record(home, proc.pid, created)
    assert ps.status(home).state == "stale"


def test_live_process_that_does_not_answer_is_not_used(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        home = ps.server_home(tmp_path)
        _record(home, sleeper.pid, psutil.Process(sleeper.pid).create_time(), port=ps.free_port(None))
        assert ps.status(home, timeout=1).state == "not-answering"
        assert ps.choose_api(tmp_path, "auto", environ={"PREFECT_HOME": str(tmp_path)}).api_url is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_torn_record_is_treated_as_absent(tmp_path):
    home = ps.server_home(tmp_path)
    home.mkdir(parents=True)
    (home / ps.RECORD).write_text('{"pid": 12')
    assert ps.read_record(home) is None and ps.status(home).state == "stopped"


def test_api_url_from_environment_then_profile_win(tmp_path):
    env = {"PREFECT_HOME": str(tmp_path), "PREFECT_API_URL": "http://example.test:4200/api"}
    assert ps.choose_api(tmp_path, "auto", env) == ps.ApiChoice("PREFECT_API_URL", "http://example.test:4200/api")
    (tmp_path / "profiles.toml").write_text(
        'active = "mine"\n[profiles.mine]\nPREFECT_API_URL = "http://profile.test:4200/api"\n')
    env.pop("PREFECT_API_URL")
    assert ps.choose_api(tmp_path, "ephemeral", env) == ps.ApiChoice("profile", "http://profile.test:4200/api")
    env["PREFECT_PROFILE"] = "other"  # a profile without the setting: back to the temporary server
    assert ps.choose_api(tmp_path, "auto", env).source == "ephemeral"


def test_server_status_without_server(tmp_path):
    proc = sftflow("server", "status", "--local-root", str(tmp_path / "root"), cwd=tmp_path, timeout=60)
    root = (tmp_path / "root").resolve()
    assert proc.returncode == 3 and proc.stdout.splitlines()[0] == (
        f"not running for local root {root} (looked for {root / 'prefect-server' / 'server.json'})")
    # what follows, if anything, names servers for other roots (other test sessions may run one on this machine)
    assert all(line.startswith("another sftflow server runs: ") for line in proc.stdout.splitlines()[1:])
    proc = sftflow("server", "stop", "--local-root", str(tmp_path / "root"), cwd=tmp_path, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "not running"


# --- real servers ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """A server started through the CLI for a storage root; stopped after the module's tests."""
    tmp = tmp_path_factory.mktemp("server")
    root = tmp / "root"
    home = ps.server_home(root)
    try:
        proc = sftflow("server", "start", "--local-root", str(root), "--port", str(ps.free_port(None)), cwd=tmp)
        assert proc.returncode == 0, proc.stderr
        rec = ps.read_record(home)
        assert proc.stdout.startswith(f"started: {rec.ui_url} (pid {rec.pid};")
        yield tmp, root, rec
    finally:
        ps.stop(home)


@pytest.mark.slow
def test_status_says_running_with_address_pid_and_uptime(running):
    tmp, root, rec = running
    proc = sftflow("server", "status", "--local-root", str(root), cwd=tmp, timeout=60)
    assert proc.returncode == 0
    assert re.match(rf"running: {rec.ui_url} \(pid {rec.pid}, up \d+h\d\dm\d\ds;", proc.stdout)
    assert ps.healthy(rec.api_url)
    again = sftflow("server", "start", "--local-root", str(root), cwd=tmp, timeout=120)
    assert again.returncode == 0 and again.stdout.startswith(f"already running: {rec.ui_url} (pid {rec.pid};")


@pytest.mark.slow
def test_status_in_another_folder_names_the_root_it_looked_for_and_the_server_that_runs(running, tmp_path):
    tmp, root, rec = running
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = sftflow("server", "status", cwd=elsewhere, timeout=60)  # the default local root: ./.sftflow
    assert proc.returncode == 3, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == (f"not running for local root {elsewhere / '.sftflow'} "
                        f"(looked for {elsewhere / '.sftflow' / 'prefect-server' / 'server.json'})")
    assert (f"another sftflow server runs: {rec.ui_url} (pid {rec.pid}) for local root {root}; commands use it "
            f"from there or with --local-root {root}") in lines[1:]
    assert rec.pid not in [r.pid for r in ps.running_elsewhere(ps.server_home(root))]  # never itself


@pytest.mark.slow
def test_flow_command_runs_on_the_recorded_server_and_prints_watch(running):
    tmp, root, rec = running
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    proc = sftflow("prepare", "--local-root", str(root), "--limit", "20", cwd=tmp, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = WATCH.search(proc.stderr)
    assert m and m.group(1) == rec.ui_url, proc.stderr[-3000:]
    run = flow_run(rec.api_url, m.group(2))  # the run is in the server's database, so in its UI
    assert run is not None and run["state_type"] == "COMPLETED"
    with urllib.request.urlopen(f"{rec.api_url}/flows/{run['flow_id']}", timeout=30) as r:
        assert json.loads(r.read())["name"] == "prepare_data"
    # its results went where the temporary server's runs put them: one cache for both modes
    assert any((root / "prefect-results").iterdir())


@pytest.mark.slow
def test_prefect_api_url_wins_over_the_recorded_server(running):
    tmp, root, rec = running
    other = rec.api_url.replace("127.0.0.1", "localhost")  # same server, another name: shows which was used
    env = {**os.environ, "PREFECT_API_URL": other}
    proc = sftflow("prepare", "--local-root", str(root), "--limit", "20", cwd=tmp, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = WATCH.search(proc.stderr)
    assert m and m.group(1) == f"http://localhost:{rec.port}", proc.stderr[-3000:]


@pytest.mark.slow
def test_ephemeral_setting_skips_the_recorded_server(running):
    tmp, root, rec = running
    before = flow_run_count(rec.api_url)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    proc = sftflow("prepare", "--local-root", str(root), "--limit", "20", "--set", "prefect_server=ephemeral",
                   cwd=tmp, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "watch:" not in proc.stderr
    assert flow_run_count(rec.api_url) == before


@pytest.mark.slow
def test_two_concurrent_starts_make_one_server_a_killed_one_is_replaced_and_stop_leaves_nothing(tmp_path):
    """One server's life through the CLI (one start, not one per check: each costs ~10 s on 2 cores)."""
    root = tmp_path / "root"
    home = ps.server_home(root)
    try:
        port = str(ps.free_port(None))
        with ThreadPoolExecutor(2) as pool:
            procs = list(pool.map(
                lambda _: sftflow("server", "start", "--local-root", str(root), "--port", port, cwd=tmp_path),
                range(2)))
        assert [p.returncode for p in procs] == [0, 0], [p.stderr for p in procs]
        firsts = sorted(p.stdout.split(":")[0] for p in procs)
        assert firsts == ["already running", "started"]
        first = ps.read_record(home)
        assert all(f"pid {first.pid};" in p.stdout for p in procs)
        assert [p.pid for p in server_processes(home)] == [first.pid]

        # killed: the record is stale, and a start replaces the server on the same port
        os.killpg(first.pid, signal.SIGKILL)
        wait_gone(first)
        proc = sftflow("server", "status", "--local-root", str(root), cwd=tmp_path, timeout=60)
        assert proc.returncode == 3 and proc.stdout.startswith(f"not running for local root {root.resolve()} (stale: "
                                                               f"recorded pid {first.pid} is gone")
        proc = sftflow("server", "start", "--local-root", str(root), "--port", str(first.port), cwd=tmp_path)
        assert proc.returncode == 0 and proc.stdout.startswith("started: "), proc.stderr
        rec = ps.read_record(home)
        assert rec.pid != first.pid and ps.status(home).running
    finally:
        stopped = sftflow("server", "stop", "--local-root", str(root), cwd=tmp_path, timeout=120)
    assert stopped.returncode == 0 and stopped.stdout.startswith(f"stopped: {rec.ui_url} (pid {rec.pid})")
    assert not ps.process_alive(rec) and server_processes(home) == []
    assert not ps.port_open(rec.port)
    assert ps.read_record(home) is None
