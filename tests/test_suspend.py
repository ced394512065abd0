"""wait_mode=suspend end to end: deployment runs through a process worker on the session's `prefect server`,
the vertex backend on the Vertex-shaped test server (whose jobs train until the test says they ended) and
the GCS emulator; the resumer is the shipped `resume_finished/local` deployment on its schedule (shortened
here: a run every `INTERVAL` s that watches for `WATCH` s, a pass every `PERIOD` s).

- the pipeline: while its job trains the run is Suspended, its tune subflow Paused (not Running with no
  process), and the worker has no child process; once the job succeeds the resumer resumes it within one
  period plus one poll, the resumed run is served every step before tuning from cache (no model asked again,
  one job), reuses its tune subflow, writes its report, and the next pass does nothing;
- a tune run whose job FAILED while it slept ends saying so, as a polling run does;
- a tune run whose job is still training when tuning_timeout runs out is resumed at its deadline and cancels
  the job (cancel_job_on_timeout), as a polling run does;
- a tune run cancelled while suspended (no process is left to cancel its job) has its job cancelled once by
  the resumer, which tags the run.

The decision's unit tests are tests/test_resume_decision.py.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import psutil
import pytest

from deployments.local_server import PREFECT, tail
from deployments.local_server import start as start_process, stop as stop_process
from sftflow.data.samples import sample_paths
from sftflow.infra import gcs, storage
from tests.servers.gcs_fixtures import emulator_env
from tests.servers.vertex_fixtures import TUNING_LINE
from tests.servers.vertex_server import VertexTestServer
from tests.test_e2e_deployment import SAMPLES, TOKEN, _cli, _creates, _logs, _submit, _wait, api

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[1]
PERIOD = 15  # seconds between the resumer's passes here (prefect.yaml ships 30)
INTERVAL, WATCH = 60, 100  # a resumer run every INTERVAL s, watching WATCH s (prefect.yaml ships 600 and 660): the
# overlap covers a resumer process's start on 2 loaded cores (20-30 s)
POLL = 1  # poll_interval of the runs
SUSPENDED_TIMEOUT = 20  # tuning_timeout of the run whose job never ends
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, gcs_emulator_server, prefect_server):
    """setup.py local → `prefect deploy --name local` (the eight */local deployments, the resumer on a
    PERIOD-second schedule) → Vertex-shaped server whose jobs train for an hour → a process worker."""
    with emulator_env(gcs_emulator_server) as gcs_emulator:
        tmp = tmp_path_factory.mktemp("suspend")
        env = {**os.environ, "PREFECT_HOME": str(tmp / "prefect-home"), "PREFECT_API_URL": prefect_server.url,
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "INFO",
               "PREFECT_WORKER_QUERY_SECONDS": "1", "PYTHONUNBUFFERED": "1",
               # SQLite answers 503 (busy) while other writers hold it; on 2 loaded cores 5 retries (62 s) ran out
               "PREFECT_CLIENT_MAX_RETRIES": "8"}
        vertex = VertexTestServer(job_phases=(0.5, 3600.0), gcs_url=gcs_emulator, require_token=TOKEN).start()
        bucket = f"gs://suspend-{uuid.uuid4().hex[:10]}"
        gcs.client().create_bucket(bucket[5:])
        worker = None
        try:
            _cli([sys.executable, "deployments/setup.py", "local"], env)
            _cli([PREFECT, "--no-prompt", "deploy", "--name", "local"], env)
            shipped = _set_resumer_period(prefect_server.url)
            _pause_resumer(prefect_server.url)  # its ticks start once a run sleeps: 2 cores are busy enough before
            worker_env = {**env, "STORAGE_EMULATOR_HOST": gcs_emulator, "SFTFLOW_VERTEX_ACCESS_TOKEN": TOKEN}
            log = tmp / "worker.log"
            worker = start_process([PREFECT, "worker", "start", "--pool", "sftflow-local"], worker_env, log, cwd=tmp)
            yield {"url": prefect_server.url, "tmp": tmp, "vertex": vertex, "bucket": bucket, "worker": worker,
                   "worker_log": log, "shipped_interval": shipped}
        finally:
            _pause_resumer(prefect_server.url)  # no resumer runs pile up on the session's server
            if worker is not None:
                stop_process(worker)
            _end_watching_resumers(prefect_server.url)
            vertex.stop()


def _set_resumer_period(url: str) -> dict:
    """Shorten the resumer's schedule and watch; returns what prefect.yaml shipped (interval, parameters)."""
    from prefect.client.schemas.actions import DeploymentUpdate
    from prefect.client.schemas.schedules import IntervalSchedule

    with api(url) as client:
        dep = client.read_deployment_by_name("resume_finished/local")
        [schedule] = dep.schedules
        shipped = {"interval": schedule.schedule.interval.total_seconds(), **dep.parameters}
        client.update_deployment_schedule(dep.id, schedule.id, max_scheduled_runs=4,  # minutes ahead, not 100 runs
                                          schedule=IntervalSchedule(interval=timedelta(seconds=INTERVAL)))
        client.update_deployment(dep.id, DeploymentUpdate(parameters={**dep.parameters, "watch_s": WATCH,
                                                                      "period_s": PERIOD}))
    return shipped


def _end_watching_resumers(url: str) -> None:
    """Resumer runs still watching when the worker stopped: Cancelled, not left Running on the session's server."""
    from prefect.states import Cancelled

    with api(url) as client:
        for run in _resumer_runs(client):
            if run.state is not None and not run.state.is_final():
                client.set_flow_run_state(run.id, Cancelled(message="the test's worker stopped"), force=True)


def _pause_resumer(url: str, active: bool = False) -> None:
    """Pause (or start) the resumer's schedule. Starting it also starts one watching run at once, watching until the
    scheduled ones surely run (the scheduler makes the first within a minute or two); a schedule already active is
    left alone (an update replaces its scheduled runs, leaving no resumer for up to two minutes)."""
    with api(url) as client:
        dep = client.read_deployment_by_name("resume_finished/local")
        changed = [s for s in dep.schedules if s.active != active]
        for schedule in changed:
            client.update_deployment_schedule(dep.id, schedule.id, active=active)
        if active and changed:
            client.create_flow_run_from_deployment(dep.id, parameters={**dep.parameters, "watch_s": 3 * INTERVAL})


def _vertex_config(stack, root: Path, **extra) -> dict:
    vertex = stack["vertex"]
    return {"backend": "vertex", "project": vertex.project, "region": vertex.location, "bucket": stack["bucket"],
            "vertex_base_url": vertex.base_url, "poll_interval": POLL, "wait_mode": "suspend",
            "local_root": str(root), **extra}


def _tune_train(stack, name: str) -> str:
    uri = f"{stack['bucket']}/{name}/train.jsonl"
    storage.write_bytes(uri, TUNING_LINE * 3)
    return uri


@pytest.fixture(scope="module")
def runs(stack):
    """Four suspend-mode runs submitted at once (the worker runs them side by side)."""
    sp = sample_paths()
    pipeline = _vertex_config(stack, stack["tmp"] / "pipeline", run_name="suspend", samples=SAMPLES, limit=100,
                              train_uri=sp["train"], val_uri=sp["val"], test_uri=sp["test"], count_tokens_rpm=60_000)
    failed = _vertex_config(stack, stack["tmp"] / "failed", run_name="failed", train_uri=_tune_train(stack, "failed"))
    timeout = _vertex_config(stack, stack["tmp"] / "timeout", run_name="timeout", tuning_timeout=SUSPENDED_TIMEOUT,
                             train_uri=_tune_train(stack, "timeout"))
    cancel = _vertex_config(stack, stack["tmp"] / "cancel", run_name="cancel", train_uri=_tune_train(stack, "cancel"))
    return {"pipeline": _submit(stack, "sft_pipeline/local", {"config": pipeline}, "pipeline"),
            "cancel": _submit(stack, "tune/local", {"config": cancel}, "cancel"),
            "failed": _submit(stack, "tune/local", {"config": failed}, "failed"),
            "timeout": _submit(stack, "tune/local", {"config": timeout}, "timeout")}


def _state(stack, run_id: str):
    with api(stack["url"]) as client:
        return client.read_flow_run(run_id).state


def _wait_suspended(stack, run_id: str, timeout: float = 900):
    deadline = time.monotonic() + timeout
    while (state := _state(stack, run_id)) is None or state.name != "Suspended":
        assert state is None or state.type.value not in TERMINAL, f"{state.name}: {state.message}\n{_logs(stack, run_id)[-3000:]}"
        assert time.monotonic() < deadline, f"{state and state.name}\n{tail(stack['worker_log'])}"
        assert stack["worker"].poll() is None, tail(stack["worker_log"])
        time.sleep(1)
    return state


def _wait_terminal(stack, run_id: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while (state := _state(stack, run_id)) is None or state.type.value not in TERMINAL:
        assert time.monotonic() < deadline, f"{state and state.name}\n{tail(stack['worker_log'])}"
        time.sleep(1)
    return state


def _flow_processes(stack) -> list[str]:
    """Command lines of the worker's child processes (a flow run executes in one)."""
    return [" ".join(p.cmdline()) for p in psutil.Process(stack["worker"].pid).children(recursive=True)]


def _job_of(state) -> str:
    """The tuning job a Suspended state waits for (its pause key names it)."""
    from sftflow.tuning.resume import Suspension

    suspension = Suspension.parse(state.state_details.pause_key)
    assert suspension is not None, state.state_details.pause_key
    return suspension.job


def _family_logs(stack, run_id: str) -> str:
    """The logs of a run and of its subflow runs."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with api(stack["url"]) as client:
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[uuid.UUID(run_id)])))
    return "\n".join(_logs(stack, i) for i in [run_id, *(str(c.id) for c in children)])


def _states(stack, run_id: str) -> list:
    with api(stack["url"]) as client:
        return sorted(client.read_flow_run_states(run_id), key=lambda s: s.timestamp)


def _resumed_at(stack, run_id: str) -> list[float]:
    """When the run was resumed (its 'Resuming' states), epoch seconds."""
    return [s.timestamp.timestamp() for s in _states(stack, run_id) if s.name == "Resuming"]


def _resumer_runs(client) -> list:
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    return client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["resume_finished"])))


def _resumer_said(stack, t: float) -> str:
    """What the resumer runs logged after epoch `t` (watching runs log what changed, each pass)."""
    from datetime import datetime, timezone

    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterTimestamp

    with api(stack["url"]) as client:
        ids = [r.id for r in _resumer_runs(client)]
        if not ids:
            return ""
        logs = client.read_logs(log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=ids),
            timestamp=LogFilterTimestamp(after_=datetime.fromtimestamp(t, timezone.utc))))
    return "\n".join(log.message for log in logs)


def _wait_resumer_says(stack, t: float, *texts: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while not all(x in (said := _resumer_said(stack, t)) for x in texts):
        assert time.monotonic() < deadline, f"{texts}\n{said[-2000:]}\n{tail(stack['worker_log'])}"
        time.sleep(1)
    return said


def _children(stack, run_id: str) -> list:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with api(stack["url"]) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[uuid.UUID(run_id)])))


def test_the_resumer_ships_always_watching(stack):
    shipped = stack["shipped_interval"]
    assert (shipped["interval"], shipped["watch_s"], shipped["period_s"]) == (600, 660, 30)


def test_pipeline_sleeps_while_the_job_trains_and_the_resumer_wakes_it(stack, runs):
    vertex, run_id = stack["vertex"], runs["pipeline"]
    state = _wait_suspended(stack, run_id)
    job = _job_of(state)
    generated, submitted = vertex.count("POST", ":generateContent"), _creates(vertex)
    assert generated >= SAMPLES  # the baseline evaluation finished before the run slept
    assert job in vertex.job_names
    assert "suspending run" in _family_logs(stack, run_id)  # said by its tune subflow
    [tune_run] = [c for c in _children(stack, run_id) if _flow_name(stack, c) == "tune"]
    assert tune_run.state.type.value == "PAUSED" and tune_run.state.name == "Paused", tune_run.state  # not Running
    assert not tune_run.state.state_details.pause_reschedule  # no resumer or UI "Resume" of its own reschedules it
    asleep = time.time()
    name = _name(stack, run_id)
    _pause_resumer(stack["url"], active=True)
    # a pass of a watching resumer saw the job training
    _wait_resumer_says(stack, asleep, f"run {name} (sft_pipeline): left suspended", timeout=INTERVAL + 120)
    assert _state(stack, run_id).name == "Suspended"
    assert not any(run_id in cmd for cmd in _flow_processes(stack)), _flow_processes(stack)
    polls = vertex.count("GET", job)

    vertex.set_job_state(job, "SUCCEEDED")
    ended = time.time()
    deadline = time.monotonic() + PERIOD + 120
    while not (resumed := _resumed_at(stack, run_id)):
        assert time.monotonic() < deadline, tail(stack["worker_log"])
        time.sleep(0.2)
    final = _wait(stack, run_id)  # COMPLETED, or the test fails with the run's logs
    delay = resumed[0] - ended
    after = [s for s in _states(stack, run_id) if s.timestamp.timestamp() > resumed[0]]
    pending = next(s for s in after if s.name == "Pending").timestamp.timestamp() - ended
    running = next(s for s in after if s.name == "Running").timestamp.timestamp() - ended
    total = final.end_time.timestamp() - ended
    print(f"\njob end -> run resumed (Resuming): {delay:.1f} s, -> Pending (the worker took it): {pending:.1f} s, -> "
          f"Running again (its process started, the flow imported): {running:.1f} s (resumer pass every {PERIOD} s, "
          f"poll {POLL} s); job end -> run completed: {total:.1f} s; job polls while suspended: {polls}")
    assert delay <= PERIOD + POLL + 10, delay  # 10 s: the pass itself (list the runs, poll each job) on 2 busy cores

    run_root = f"{stack['bucket']}/runs/suspend"
    report = json.loads(storage.read_text(f"{run_root}/report.json"))
    assert report["job"]["name"] == job
    assert _creates(vertex) == submitted, "the resumed run submitted a second job"
    assert vertex.count("POST", ":generateContent") == generated + SAMPLES, "the baseline was asked again"
    assert len(_resumed_at(stack, run_id)) == 1

    tunes = [c for c in _children(stack, run_id) if _flow_name(stack, c) == "tune"]
    assert [(c.id, c.state.type.value) for c in tunes] == [(tune_run.id, "COMPLETED")]  # the Paused subflow, reused

    # the next pass finds nothing to resume
    _wait_resumer_says(stack, resumed[0] + 0.5, "0 resumed", timeout=2 * PERIOD + 60)
    assert len(_resumed_at(stack, run_id)) == 1 and _state(stack, run_id).type.value == "COMPLETED"


def _name(stack, run_id: str) -> str:
    with api(stack["url"]) as client:
        return client.read_flow_run(run_id).name


def _flow_name(stack, run) -> str:
    with api(stack["url"]) as client:
        return client.read_flow(run.flow_id).name


def test_a_job_that_failed_while_the_run_slept_fails_the_resumed_run(stack, runs):
    run_id = runs["failed"]
    _pause_resumer(stack["url"], active=True)  # (the pipeline's test turned it on already, if it ran)
    job = _job_of(_wait_suspended(stack, run_id))
    # one tick by hand, from the command line: the job still trains, the run stays suspended
    out = _cli([str(Path(sys.executable).parent / "sftflow"), "resume-finished"],
               {**os.environ, "PREFECT_API_URL": stack["url"], "STORAGE_EMULATOR_HOST": os.environ["STORAGE_EMULATOR_HOST"],
                "SFTFLOW_VERTEX_ACCESS_TOKEN": TOKEN})
    assert any(job in line and "left suspended" in line and "still RUNNING" in line for line in out.splitlines()), out
    assert _state(stack, run_id).name == "Suspended"
    stack["vertex"].set_job_state(job, "FAILED")
    state = _wait_terminal(stack, run_id)
    assert state.type.value == "FAILED", state
    assert f"tuning job {job} ended FAILED" in (state.message or "") + _logs(stack, run_id)


def test_a_job_still_training_at_tuning_timeout_is_cancelled_by_the_resumed_run(stack, runs):
    """Suspended, then resumed by the resumer at the deadline (the job still RUNNING), then the run cancels
    the job and fails saying so, as a polling run does when tuning_timeout runs out."""
    vertex, run_id = stack["vertex"], runs["timeout"]
    _pause_resumer(stack["url"], active=True)
    state = _wait_terminal(stack, run_id, timeout=420 + SUSPENDED_TIMEOUT + PERIOD)
    history = _states(stack, run_id)
    [suspended] = [s for s in history if s.name == "Suspended"]
    job = _job_of(suspended)
    # Prefect keeps it suspended past the deadline (the resumer's grace): nobody fails it before the resumer acts
    assert suspended.state_details.pause_timeout.timestamp() > suspended.timestamp.timestamp() + SUSPENDED_TIMEOUT
    assert [s.name for s in history if s.timestamp > suspended.timestamp][:1] == ["Resuming"]
    assert state.type.value == "FAILED", state
    text = (state.message or "") + _logs(stack, run_id)
    assert f"tuning job {job} cancelled after" in text and "(tuning timeout)" in text, text[-3000:]
    assert vertex.count("POST", f"{job}:cancel") == 1


def test_cancelling_a_suspended_run_cancels_its_job_once(stack, runs):
    """Prefect cancels a suspended run on the server alone (no process: no on_cancellation hook, no
    cancel_job_on_interrupt); the resumer's next pass cancels its job, once, and tags the run."""
    from prefect.states import Cancelling

    from sftflow.tuning.resume import CANCEL_CHECKED_TAG, JOB_CANCELLED_TAG

    vertex, run_id = stack["vertex"], runs["cancel"]
    _pause_resumer(stack["url"], active=True)
    job = _job_of(_wait_suspended(stack, run_id))
    with api(stack["url"]) as client:
        client.set_flow_run_state(run_id, Cancelling())  # what the UI's Cancel and `prefect flow-run cancel` send
        assert client.read_flow_run(run_id).state.name == "Cancelled"  # no process: Cancelled at once
    cancelled = time.time()
    deadline = time.monotonic() + INTERVAL + 2 * PERIOD + 120
    while vertex.count("POST", f"{job}:cancel") == 0:
        assert time.monotonic() < deadline, f"{_resumer_said(stack, cancelled)[-3000:]}\n{tail(stack['worker_log'])}"
        time.sleep(1)
    print(f"\nrun cancelled while suspended -> its job cancelled: {time.time() - cancelled:.1f} s (pass every {PERIOD} s)")
    with api(stack["url"]) as client:
        while not {CANCEL_CHECKED_TAG, JOB_CANCELLED_TAG} <= set(client.read_flow_run(run_id).tags):
            assert time.monotonic() < deadline, tail(stack["worker_log"])
            time.sleep(0.5)
    # a pass by hand, after the resumer handled it: nothing more is cancelled
    out = _cli([str(Path(sys.executable).parent / "sftflow"), "resume-finished"],
               {**os.environ, "PREFECT_API_URL": stack["url"], "STORAGE_EMULATOR_HOST": os.environ["STORAGE_EMULATOR_HOST"],
                "SFTFLOW_VERTEX_ACCESS_TOKEN": TOKEN})
    assert "cancelled" not in out and vertex.count("POST", f"{job}:cancel") == 1, out
