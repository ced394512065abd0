"""Two "machines" on one run: one Prefect server (the session's), the GCS emulator, the Vertex-shaped server,
and two CLI processes, each with its own empty local root, HOME, working directory and PREFECT_HOME; all
they share is the bucket (datasets, records, checkpoints, leases, Prefect's cache records) and the APIs.

- A runs the vertex pipeline and is SIGKILLed while the job trains, in the middle of its baseline evaluation;
  B reruns it: one tuning job in all, every step A finished is served from the bucket, no example asked twice.
- A and B evaluate the same run at the same moment: every example is asked exactly once in all.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from sftflow.infra import storage
from tests import cliproc
from tests.servers.vertex_fixtures import TEST_TOKEN
from tests.smalldata import small_samples

ROOT = Path(__file__).resolve().parents[1]
TTL = 4.0  # the checkpoint lease's TTL on these machines (SFTFLOW_LEASE_TTL_S)
SAMPLES = 8

pytestmark = pytest.mark.slow


def machine(tmp_path: Path, name: str, server, gcs_emulator: str, prefect_api_env: dict) -> dict:
    """A fresh machine's environment: nothing of this process's SFTFLOW_* / PREFECT_* settings, its own
    HOME, PREFECT_HOME, working directory and local root."""
    base = tmp_path / name
    for d in ("home", "cwd"):
        (base / d).mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SFTFLOW_", "PREFECT_", "STORAGE_EMULATOR"))}
    env.update(PYTHONPATH=str(ROOT), HOME=str(base / "home"), PREFECT_HOME=str(base / "prefect-home"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", STORAGE_EMULATOR_HOST=gcs_emulator,
               SFTFLOW_VERTEX_BASE_URL=server.base_url, SFTFLOW_VERTEX_ACCESS_TOKEN=TEST_TOKEN,
               SFTFLOW_LEASE_TTL_S=str(TTL), **prefect_api_env)
    return {"env": env, "cwd": base / "cwd", "root": base / "root", "name": name}


def start(m: dict, args: list[str], server, bucket: str) -> object:
    cmd = [sys.executable, "-m", "sftflow.cli.main", *args, "--backend", "vertex", "--project", server.project,
           "--region", server.location, "--bucket", bucket, "--local-root", str(m["root"])]
    env = m["env"]
    old = os.getcwd()
    os.chdir(m["cwd"])  # cliproc.start runs in the current directory: the machine's own
    try:
        return cliproc.start(cmd, env, m["cwd"])
    finally:
        os.chdir(old)


def prompts(server, path_end: str, since: float = 0.0) -> Counter:
    """Answered generateContent requests per prompt (one prompt per test example) on routes ending so."""
    out: Counter = Counter()
    for r in list(server.requests):
        if r["time"] >= since and r["status"] == 200 and r["path"].endswith(path_end):
            out[r["body"]["contents"][-1]["parts"][0]["text"]] += 1
    return out


def routes(server, since: float) -> Counter:
    """Requests per (method, route) since `since`, ids folded, for the note."""
    out: Counter = Counter()
    for r in list(server.requests):
        if r["time"] < since:
            continue
        path = r["path"]
        route = ("generateContent (tuned endpoint)" if "/endpoints/" in path and path.endswith(":generateContent")
                 else "generateContent (base)" if path.endswith(":generateContent")
                 else "tuningJobs/N" if "/tuningJobs/" in path else path.rsplit("/", 1)[-1].split("@")[0])
        out[f"{r['method']} {route}"] += 1
    return out


def task_states_since(since: float, expect: tuple[str, ...] = (), timeout: float = 60.0) -> dict[str, list[str]]:
    """Task name → state names of the task runs of flow runs that started after `since` (the session
    server). Prefect records task runs from events, a moment later on a busy machine, so this waits until
    every task named in `expect` has a run and every run is final (an empty list is not "all final")."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterStartTime
    from prefect.types._datetime import from_timestamp

    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                start_time=FlowRunFilterStartTime(after_=from_timestamp(since))))
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[r.id for r in runs])))
        out: dict[str, list[str]] = {}
        for t in tasks:
            out.setdefault(t.name.rsplit("-", 1)[0], []).append(t.state.name if t.state else "")
        settled = bool(tasks) and all(t.state is not None and t.state.is_final() for t in tasks)
        if (settled and all(name in out for name in expect)) or time.monotonic() > deadline:
            return {k: sorted(v) for k, v in sorted(out.items())}
        time.sleep(0.5)


def checkpoint_objects(bucket: str, label: str) -> list[str]:
    return [u for u in storage.list_uris(f"{bucket}/runs/default/checkpoints") if f"/{label}-" in u
            and u.endswith(".jsonl")]


def test_machine_b_continues_a_run_whose_machine_a_was_killed_while_the_job_trained(
        make_vertex_server, gcs_bucket, gcs_emulator, prefect_api_env, prefect_server, tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", prefect_server.url)
    server = make_vertex_server(job_phases=(1.0, 3600.0))  # trains until the test says it succeeded
    data = small_samples(tmp_path)
    args = ["pipeline", "--train", data["train"], "--val", data["val"], "--test", data["test"],
            "--samples", str(SAMPLES), "--concurrency", "2", "--poll-interval", "1", "--set", "count_tokens_rpm=60000"]
    a, b = (machine(tmp_path, n, server, gcs_emulator, prefect_api_env) for n in ("a", "b"))

    # A: its baseline paced at 1 request/s, so it is mid-way when the job is RUNNING; the kill falls between
    # two requests, once every answered example is in the bucket's checkpoint.
    proc = start(a, [*args, "--rpm", "60"], server, gcs_bucket)
    deadline = time.monotonic() + 400
    while True:
        assert proc.poll() is None, cliproc.finish(proc)[-4000:]
        assert time.monotonic() < deadline, "machine A never reached the middle of its baseline"
        asked = sum(prompts(server, "gemini-2.5-flash:generateContent").values())
        if server.job_names and 2 <= asked < SAMPLES and len(checkpoint_objects(gcs_bucket, "base")) == asked:
            os.kill(proc.pid, signal.SIGKILL)
            killed = time.time()
            break
        time.sleep(0.05)
    cliproc.finish(proc)
    assert len(server.job_names) == 1
    asked_by_a = prompts(server, "gemini-2.5-flash:generateContent")
    assert all(n == 1 for n in asked_by_a.values())

    # B: a fresh machine; the job ends while it polls.
    (job,) = server.job_names
    server.set_job_state(job, "SUCCEEDED")
    b_start = time.time()
    out = cliproc.finish(start(b, [*args, "--rpm", "60000"], server, gcs_bucket), timeout=600)
    assert "sftflow: error" not in out and "report:" in out, out[-5000:]
    assert len(server.job_names) == 1 and server.count("POST", "/tuningJobs") == 1  # one job in all

    base = prompts(server, "gemini-2.5-flash:generateContent")
    assert len(base) == SAMPLES and all(n == 1 for n in base.values()), base  # no base example asked twice
    b_base = prompts(server, "gemini-2.5-flash:generateContent", since=b_start)
    assert set(b_base) == set(base) - set(asked_by_a)  # B asked exactly the ones A had not
    tuned = prompts(server, ":generateContent", since=b_start) - b_base
    assert len(tuned) == SAMPLES and all(n == 1 for n in tuned.values())

    b_routes = routes(server, b_start)
    judged = b_routes.pop("POST us-central1:evaluateInstances", 0)  # judge auto: A never reached the judge step
    assert judged == 2 * b_routes["POST generateContent (tuned endpoint)"]  # each pair once, in both orders
    # Besides the missing examples: polls of the one job (and the list that finds it by its intent's label), and
    # reads of the model and endpoint it made (the tuned-model record, the champion's check). No countTokens, no
    # job creation, nothing A had finished.
    allowed = {"GET tuningJobs/N", "GET tuningJobs", "POST generateContent (base)", "POST generateContent (tuned endpoint)"}
    ids = {p.rsplit("/", 1)[-1].split("@")[0] for p in server.job_outputs(job)}  # the tuned model, its endpoint
    preflight = {"POST test-project:testIamPermissions", "POST gemini-2.5-flash:countTokens"}  # main's start-up checks
    assert set(b_routes) <= allowed | preflight | {f"GET {i}" for i in ids} | {f"POST {i}" for i in ids}, b_routes
    assert b_routes["POST gemini-2.5-flash:countTokens"] <= 1  # one probe; the datasets' counts come from the bucket
    states = task_states_since(b_start, expect=("check-tuning-data", "validate"))
    assert set(states.get("check-tuning-data", [])) == {"Cached"}, states  # A's checks, served from the bucket
    assert set(states.get("validate", [])) == {"Cached"}, states
    recomputed = {k: v for k, v in states.items() if "Completed" in v}
    print(json.dumps({"machine A asked before its kill": len(asked_by_a), "B's requests by route": b_routes,
                      "B's task runs": states, "B recomputed": sorted(recomputed),
                      "B's wall time (s)": round(time.time() - b_start, 1),
                      "kill to B's start (s)": round(b_start - killed, 1)}, indent=1))


def test_two_machines_evaluating_the_same_run_at_once_ask_each_example_once(
        make_vertex_server, gcs_bucket, gcs_emulator, prefect_api_env, prefect_server, tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", prefect_server.url)
    server = make_vertex_server()
    data = small_samples(tmp_path)
    args = ["evaluate", "--test", data["test"], "--samples", str(SAMPLES), "--concurrency", "2", "--rpm", "20"]
    a, b = (machine(tmp_path, n, server, gcs_emulator, prefect_api_env) for n in ("a", "b"))
    procs = [start(m, args, server, gcs_bucket) for m in (a, b)]
    outs = [cliproc.finish(p, timeout=600) for p in procs]
    codes = [p.returncode for p in procs]

    asked = prompts(server, "gemini-2.5-flash:generateContent")
    assert len(asked) == SAMPLES and all(n == 1 for n in asked.values()), asked  # each example once, in all
    assert 0 in codes, outs
    for code, out in zip(codes, outs):  # the other one either found it done or stopped, naming the holder
        assert code == 0 or ("another process is writing it (pid " in out and code == 1), out[-3000:]
    print(json.dumps({"exit codes": codes, "generateContent": sum(asked.values())}))
