"""The tune and cleanup flows on the vertex backend: real google-genai / aiplatform / storage clients
against the Vertex-shaped server and the GCS emulator on 127.0.0.1."""

import json
import os
import re
import signal
import sys
import time

import pytest

from flows.cleanup import cleanup
from flows.tune import tune
from sftflow.infra import storage
from sftflow.tuning.intent import JobFailed
from tests.flowutil import flow_artifacts
from tests import cliproc
from tests.servers.vertex_fixtures import TEST_TOKEN, flow_config, upload_datasets

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("token_in_env")]


@pytest.fixture
def datasets(gcs_bucket):
    return upload_datasets(gcs_bucket)


def test_tune_succeeds_with_progress_artifacts_and_survives_503s(make_vertex_server, datasets, tmp_path, capsys):
    # RUNNING spans several 1 s polls despite 503s; every 2-token example is over a 1-token limit: truncated
    server = make_vertex_server(job_phases=(0.5, 6.0), max_example_tokens=1)
    bucket, train, val = datasets
    config = flow_config(server, bucket, tmp_path)
    server.set_faults(0.4, (503,))
    state = tune(config={**config, "train_uri": train, "val_uri": val}, return_state=True)
    out = state.result()
    assert out["endpoint"].startswith(f"projects/{server.project}/locations/{server.location}/endpoints/")
    assert server.count("POST", ":cancel") == 0
    created = [r for r in server.requests if r["method"] == "POST" and r["path"].endswith("/tuningJobs")
               and r["status"] == 200]
    assert len(created) == 1
    body = created[0]["body"]
    assert body["supervisedTuningSpec"]["trainingDatasetUri"] == train
    assert body["supervisedTuningSpec"]["hyperParameters"]["adapterSize"] == "ADAPTER_SIZE_FOUR"
    polls = [r for r in server.requests if r["method"] == "GET" and "/tuningJobs/" in r["path"]]
    assert any(r["status"] == 503 for r in polls)  # faults did hit the poller

    arts = flow_artifacts(state)
    keys = {a.key for a in arts}
    assert {"tuning-progress", "tuning-job-status", "tuning-job-console"} <= keys
    states_seen = " ".join(a.data for a in arts if a.key == "tuning-job-status")
    assert "RUNNING" in states_seen and "SUCCEEDED" in states_seen  # written while polling, not only at the end
    # what the job says of the data (supervisedTuningDataStats) is shown, truncation as a warning line
    assert (out["stats"]["truncated_examples"], out["stats"]["truncated_indices"]) == (3, [1, 2, 3])
    assert out["stats"]["billable_tokens"] == 3  # 3 examples, each truncated to the 1-token limit, 1 epoch
    warning = "warning: Vertex truncated or dropped 3 of 3 training examples (examples 1, 2, 3)"
    assert warning in states_seen  # the job artifact (the flow also prints and logs it)

    # A rerun of the same intent answers from the record: no API call at all.
    server.set_faults(0.0)
    before = len(server.requests)
    again = tune(config={**config, "train_uri": train, "val_uri": val})
    assert again["endpoint"] == out["endpoint"]
    assert len(server.requests) == before

    # Cleanup lists but deletes nothing without yes, then deletes endpoint, model and objects.
    listed = cleanup(config=config)
    assert out["endpoint"] in listed["items"]
    assert server.count("DELETE", "") == 0
    assert storage.exists(storage.join(bucket, "runs", "default", "tuned.json"))
    done = cleanup(yes=True, config=config)
    assert server.count("DELETE", "/endpoints/") == 1 and server.count("DELETE", "/models/") == 1
    assert not storage.list_uris(storage.join(bucket, "runs", "default"))
    assert done["items"] == listed["items"]


def _failed_message(server, job: str, hint: str = "") -> str:
    job_id = job.rsplit("/", 1)[1]
    console = ("https://console.cloud.google.com/vertex-ai/generative/language/locations/"
               f"{server.location}/tuning/tuningJob/{job_id}?project={server.project}")
    return f"tuning job {job} ended FAILED: Dataset row 3: invalid role (console: {console}){hint}"


def test_failed_job_fails_the_flow_and_only_resubmit_failed_pays_again(make_vertex_server, cli_env, datasets,
                                                                       tmp_path):
    server = make_vertex_server(job_phases=(0.2, 0.5), job_outcome="FAILED")
    bucket, train, val = datasets
    with pytest.raises(JobFailed) as err:
        tune(config={**flow_config(server, bucket, tmp_path), "train_uri": train, "val_uri": val})
    (job,) = server.job_names
    assert str(err.value) == _failed_message(server, job)
    # A rerun does not pay for a second job unless asked to: in-process, and through the CLI.
    hint = ". Rerun with --resubmit-failed (or resubmit_failed=true) to submit a new job for the same inputs"
    with pytest.raises(JobFailed) as err:
        tune(config={**flow_config(server, bucket, tmp_path), "train_uri": train, "val_uri": val})
    assert str(err.value) == _failed_message(server, job, hint)
    proc = _cli_tune(server, cli_env, bucket, train, val, tmp_path)
    out = cliproc.finish(proc)
    assert proc.returncode == 1, out[-3000:]
    assert f"sftflow: error: {_failed_message(server, job, hint)}\n" in out
    assert server.count("POST", "/tuningJobs") == 1
    # --resubmit-failed submits exactly one new job for the same intent (this one succeeds).
    server.job_outcome = "SUCCEEDED"
    proc = _cli_tune(server, cli_env, bucket, train, val, tmp_path, "--resubmit-failed")
    out = cliproc.finish(proc)
    assert proc.returncode == 0, out[-3000:]
    assert server.count("POST", "/tuningJobs") == 2
    new = [name for name in server.job_names if name != job]
    assert len(new) == 1 and f"tuning job: {new[0]} (submitted)" in out
    assert f"endpoint: projects/{server.project}/locations/{server.location}/endpoints/" in out


@pytest.fixture
def cli_env(gcs_emulator, prefect_api_env) -> dict[str, str]:
    """The emulator, and the session's Prefect server (no temporary server start in each CLI process)."""
    return {"STORAGE_EMULATOR_HOST": gcs_emulator, **prefect_api_env}


def _cli_tune(server, cli_env, bucket, train, val, tmp_path, *extra):
    env = dict(os.environ, **cli_env, SFTFLOW_VERTEX_BASE_URL=server.base_url,
               SFTFLOW_VERTEX_ACCESS_TOKEN=TEST_TOKEN, PREFECT_HOME=str(tmp_path / "prefect-home"),
               PREFECT_LOGGING_LEVEL="INFO")
    cmd = [sys.executable, "-m", "sftflow.cli.main", "tune", "--backend", "vertex", "--project", server.project,
           "--bucket", bucket, "--train", train, "--val", val, "--poll-interval", "1",
           "--local-root", str(tmp_path / "root"), *extra]
    return cliproc.start(cmd, env, tmp_path)


def _wait_for_polls(server, n, timeout=600):  # a CLI start took >120 s on 2 cores shared by 8 sessions
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.count("GET", "/tuningJobs/") >= n:
            return
        time.sleep(0.1)
    raise AssertionError("the flow never polled the job")


def test_killed_flow_reattaches_to_the_same_job(make_vertex_server, cli_env, datasets, tmp_path):
    server = make_vertex_server(job_phases=(1.0, 600.0))  # runs until the test finishes it
    bucket, train, val = datasets
    proc = _cli_tune(server, cli_env, bucket, train, val, tmp_path)
    _wait_for_polls(server, 3)
    os.kill(proc.pid, signal.SIGKILL)
    cliproc.finish(proc)
    polls = server.count("GET", "/tuningJobs/")
    proc = _cli_tune(server, cli_env, bucket, train, val, tmp_path)
    _wait_for_polls(server, polls + 2)  # the second process is awaiting the same, still running job
    (job,) = server.job_names
    server.set_job_state(job, "SUCCEEDED")
    out = cliproc.finish(proc)
    assert proc.returncode == 0, out[-3000:]
    assert "attached to existing tuning job" in out
    assert server.count("POST", "/tuningJobs") == 1  # exactly one job was ever created
    assert "endpoint: projects/" in out
    assert TEST_TOKEN not in out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_cancels_the_cloud_job(make_vertex_server, cli_env, datasets, tmp_path, sig):
    """Ctrl-C, and SIGTERM (what a Prefect worker sends when a run is cancelled), cancel the job."""
    server = make_vertex_server(job_phases=(1.0, 60.0))
    bucket, train, val = datasets
    proc = _cli_tune(server, cli_env, bucket, train, val, tmp_path)
    _wait_for_polls(server, 2)
    os.kill(proc.pid, sig)
    out = cliproc.finish(proc)
    assert proc.returncode != 0
    assert server.count("POST", ":cancel") == 1, out[-3000:]
    assert "cancelling tuning job" in out


def test_interrupt_with_cancel_job_on_interrupt_false_leaves_the_job_running(make_vertex_server, cli_env,
                                                                            datasets, tmp_path):
    server = make_vertex_server(job_phases=(1.0, 600.0))
    bucket, train, val = datasets
    proc = _cli_tune(server, cli_env, bucket, train, val, tmp_path, "--set", "cancel_job_on_interrupt=false")
    _wait_for_polls(server, 2)
    os.kill(proc.pid, signal.SIGINT)
    out = cliproc.finish(proc)
    assert proc.returncode == 130, out[-3000:]
    (job,) = server.job_names
    assert f"interrupted: tuning job {job} keeps running (cancel_job_on_interrupt=false)" in out
    assert server.count("POST", ":cancel") == 0
    assert _job_state(server, job) == "JOB_STATE_RUNNING"


def test_timeout_with_cancel_job_on_timeout_false_fails_the_command_and_leaves_the_job(make_vertex_server, cli_env,
                                                                                       datasets, tmp_path):
    """Through the CLI (--timeout); the default, cancel on timeout, is tests/test_cost.py's."""
    server = make_vertex_server(job_phases=(1.0, 600.0))
    bucket, train, val = datasets
    proc = _cli_tune(server, cli_env, bucket, train, val, tmp_path, "--timeout", "3",
                     "--set", "cancel_job_on_timeout=false")
    out = cliproc.finish(proc)
    assert proc.returncode == 1, out[-3000:]
    (job,) = server.job_names
    assert re.search(rf"^sftflow: error: tuning job {re.escape(job)} still RUNNING after [3-9]s \(timeout 3s\); "
                     r"the job was left running \(cancel_job_on_timeout=false\) — wait again to attach to it, "
                     r"or cancel it$", out, re.M), out[-3000:]
    assert server.count("POST", ":cancel") == 0
    assert _job_state(server, job) == "JOB_STATE_RUNNING"


def _job_state(server, job: str) -> str:
    """The job's state as the server reports it now (read through the server's own route)."""
    import urllib.request

    req = urllib.request.Request(f"{server.base_url}/v1beta1/{job}", headers={"Authorization": f"Bearer {TEST_TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())["state"]
