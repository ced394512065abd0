"""Unhappy paths of tuning, against the Vertex-shaped server and the GCS emulator (real SDKs, real processes).

Faults and hostile inputs tried here:
- a token given as `--set vertex_access_token=T`: used (the server demands it) yet stored nowhere;
- a token in a flow's `config`: refused, and scrubbed from the refused run's stored parameters;
- a token read from a Prefect Secret block named in the config: used, never a parameter;
- two `sftflow tune` processes racing for one intent (both see no job): one job between them;
- a claimant that died before submitting (stale claim): taken over after `claim_stale_after`;
- `tune --train gs://bad --val ./bad`: refused before any tuning API request, lines name the given URIs;
- a job state the API added later: logged once, polled on as running;
- `poll_interval` below 1 s: refused with one line;
- Ctrl-C while the cancel request fails with 500: the failure is logged, the run still ends interrupted.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sftflow.infra import storage
from sftflow.backends.base import JobState, TuningSpec
from sftflow.tuning.hyperparameters import Hyperparameters
from sftflow.backends.vertex import VertexTuner
from sftflow.config import load_settings
from sftflow.errors import ConfigError
from sftflow.tuning.polling import await_job
from sftflow.tuning.intent import Claims, claim_uri, ensure_job
from tests import cliproc
from tests.servers.vertex_fixtures import TEST_TOKEN, upload_datasets

GOOD = b'{"contents":[{"role":"user","parts":[{"text":"a"}]},{"role":"model","parts":[{"text":"b"}]}]}\n'
CANARY = "h3canary-q7x9-zz-not-a-credential"  # distinctive, resembles no Google credential format


@pytest.fixture
def datasets(gcs_bucket):
    return upload_datasets(gcs_bucket, GOOD)


def _env(tmp_path: Path, gcs_emulator: str, name: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFTFLOW_")}
    env.update(STORAGE_EMULATOR_HOST=gcs_emulator, PREFECT_HOME=str(tmp_path / f"prefect-home-{name}"),
               PREFECT_LOGGING_LEVEL="INFO", **extra)
    return env


def _start_tune(server, env, bucket, train, val, root: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "sftflow.cli.main", "tune", "--backend", "vertex", "--project", server.project,
           "--bucket", bucket, "--train", train, "--poll-interval", "1", "--local-root", str(root), *extra]
    if val:
        cmd += ["--val", val]
    return cliproc.start(cmd, env, root.parent)


def _finish(proc, timeout: float = 300) -> str:
    return cliproc.finish(proc, timeout)


def _creates(server) -> list[dict]:
    return [r for r in server.requests if r["method"] == "POST" and r["path"].endswith("/tuningJobs")]


def _files_containing(root: Path, needle: bytes) -> tuple[list[str], int]:
    hits, scanned = [], 0
    for f in sorted(root.rglob("*")):
        if f.is_file():
            scanned += 1
            if needle in f.read_bytes():
                hits.append(str(f))
    return hits, scanned


# --------------------------------------------------------------------------- secrets never stored


@pytest.mark.slow
def test_cli_token_is_used_but_stored_nowhere(make_vertex_server, gcs_emulator, datasets, tmp_path):
    server = make_vertex_server(job_phases=(0.2, 0.5), require_token=CANARY)
    bucket, train, val = datasets
    (tmp_path / "w").mkdir()
    root = tmp_path / "w" / "root"
    env = _env(tmp_path, gcs_emulator, "leak")
    proc = _start_tune(server, env, bucket, train, val, root, "--run-name", "leakcheck",
                       "--set", f"vertex_access_token={CANARY}", "--set", f"vertex_base_url={server.base_url}")
    out = _finish(proc)
    assert proc.returncode == 0, out[-3000:]
    # The token was really used: the server answers 401 to anything but `Bearer CANARY`.
    assert [r["status"] for r in _creates(server)] == [200]
    assert all(r["status"] != 401 for r in server.requests)

    assert CANARY not in out  # stdout + stderr (Prefect's INFO logs included)
    prefect_home = Path(env["PREFECT_HOME"])
    hits, scanned = _files_containing(prefect_home, CANARY.encode())  # sqlite database (runs, logs, artifacts)
    assert hits == [] and scanned > 0
    assert any(f.suffix == ".db" for f in prefect_home.rglob("*"))
    # Positive control: the run's parameters are in that database, so a token among them would be found.
    control, _ = _files_containing(prefect_home, server.base_url.encode())
    assert control, "the flow run's parameters were not found in Prefect's database: the check proves nothing"
    hits, scanned = _files_containing(root, CANARY.encode())  # storage root, work area, Prefect results
    assert hits == [] and scanned > 0
    objects = storage.list_uris(bucket)
    assert any(u.endswith("tuned.json") for u in objects)
    assert [u for u in objects if CANARY.encode() in storage.read_bytes(u)] == []


@pytest.mark.slow
def test_flow_refuses_a_token_in_config_and_scrubs_it(make_vertex_server, datasets, tmp_path, monkeypatch):
    from prefect.client.orchestration import get_client

    from flows.tune import tune

    monkeypatch.delenv("SFTFLOW_VERTEX_ACCESS_TOKEN", raising=False)
    server = make_vertex_server()
    bucket, train, val = datasets
    config = {"backend": "vertex", "project": server.project, "bucket": bucket, "vertex_base_url": server.base_url,
              "local_root": str(tmp_path / "root"), "vertex_access_token": CANARY}
    state = tune(config={**config, "train_uri": train, "val_uri": val}, return_state=True)
    assert state.is_failed()
    with pytest.raises(ConfigError) as err:
        state.result()
    message = str(err.value)
    assert "\n" not in message and CANARY not in message
    assert "SFTFLOW_VERTEX_ACCESS_TOKEN" in message and "vertex_access_token_secret_block" in message
    assert server.requests == []
    with get_client(sync_client=True) as client:
        stored = client.read_flow_run(state.state_details.flow_run_id).parameters
    assert CANARY not in json.dumps(stored)
    assert stored["config"]["vertex_access_token"] == "**********" and stored["config"]["bucket"] == bucket


@pytest.mark.slow
def test_token_from_a_prefect_secret_block_is_used_not_stored(make_vertex_server, datasets, tmp_path, monkeypatch):
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client

    from flows.tune import tune
    from tests.flowutil import flow_artifacts

    monkeypatch.delenv("SFTFLOW_VERTEX_ACCESS_TOKEN", raising=False)
    token = CANARY + "-block"
    Secret(value=token).save("sftflow-h3-vertex-token", overwrite=True)
    server = make_vertex_server(job_phases=(0.2, 0.5), require_token=token)
    bucket, train, val = datasets
    config = {"backend": "vertex", "project": server.project, "bucket": bucket, "vertex_base_url": server.base_url,
              "local_root": str(tmp_path / "root"), "poll_interval": 1,
              "vertex_access_token_secret_block": "sftflow-h3-vertex-token"}
    state = tune(config={**config, "train_uri": train, "val_uri": val}, return_state=True)
    assert state.is_completed(), state
    assert [r["status"] for r in _creates(server)] == [200]  # authorised with the block's token
    with get_client(sync_client=True) as client:
        params = client.read_flow_run(state.state_details.flow_run_id).parameters
    assert params["config"]["vertex_access_token_secret_block"] == "sftflow-h3-vertex-token"
    assert token not in json.dumps(params)  # (logs: see the CLI test, which keeps INFO logs and greps them)
    assert not [a.key for a in flow_artifacts(state) if token in json.dumps(a.data, default=str)]

    with pytest.raises(ConfigError, match="no Prefect Secret block named 'no-such-block'"):
        tune(config={**config, "vertex_access_token_secret_block": "no-such-block", "train_uri": train,
                     "val_uri": val})


def test_cli_moves_the_token_out_of_the_flow_config(monkeypatch):
    from sftflow.cli.config import to_environment

    monkeypatch.delenv("SFTFLOW_VERTEX_ACCESS_TOKEN", raising=False)
    config = to_environment({"backend": "vertex", "vertex_access_token": CANARY})
    assert config == {"backend": "vertex"}
    assert os.environ["SFTFLOW_VERTEX_ACCESS_TOKEN"] == CANARY
    assert load_settings().vertex_access_token.get_secret_value() == CANARY


# --------------------------------------------------------------------------- one job per intent


@pytest.mark.slow
def test_two_concurrent_tunes_create_one_job(make_vertex_server, gcs_emulator, datasets, tmp_path, prefect_api_env):
    server = make_vertex_server(job_phases=(1.0, 3.0))
    server.hold_lists(2)  # both processes see "no job yet" before either can submit
    bucket, train, val = datasets
    procs = []
    for i in range(2):
        (tmp_path / f"p{i}").mkdir()
        env = _env(tmp_path, gcs_emulator, f"race{i}", SFTFLOW_VERTEX_ACCESS_TOKEN=TEST_TOKEN,
                   SFTFLOW_VERTEX_BASE_URL=server.base_url, **prefect_api_env)
        procs.append(_start_tune(server, env, bucket, train, val, tmp_path / f"p{i}" / "root"))
    outs = [_finish(p) for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    assert len(_creates(server)) == 1, [o[-2000:] for o in outs]
    jobs = [re.search(r"tuning job: (\S+) \((attached|submitted)\)", out).groups() for out in outs]
    assert {name for name, _ in jobs} == {server.job_names[0]}
    assert sorted(how for _, how in jobs) == ["attached", "submitted"]
    endpoints = {line for out in outs for line in out.splitlines() if line.startswith("endpoint: ")}
    assert len(endpoints) == 1


def _spec(key: str, train: str) -> TuningSpec:
    return TuningSpec(base_model="gemini-2.5-flash", train_uri=train, val_uri=None,
                      hyperparameters=Hyperparameters(1, 4, 1.0), display_name="t", key=key)


@pytest.mark.slow
def test_a_stale_claim_is_taken_over_after_claim_stale_after(make_vertex_server, vertex_settings_for, datasets,
                                                             caplog):
    """Rule: a claim that names no job for `stale_after` seconds (its claimant died before submitting) is
    taken over; a claim older than that by its own timestamp is taken over at once."""
    server = make_vertex_server(job_phases=(5.0, 5.0))
    bucket, train, _ = datasets
    tuner = VertexTuner(vertex_settings_for(server))
    claims = Claims(storage.join(bucket, "claims", "tuning"), stale_after=2.0, wait_step=0.2)
    dead = {"owner": "elsewhere/4242/dead", "claimed_at": time.time(), "key": "kstale", "job": None}
    assert storage.create_if_absent(claim_uri(claims, "kstale", [], 0), json.dumps(dead).encode())
    caplog.set_level(logging.INFO, logger="sftflow.tuning.intent")
    start = time.monotonic()
    name, attached = ensure_job(tuner, _spec("kstale", train), claims=claims)
    waited = time.monotonic() - start
    assert 2.0 <= waited < 30 and not attached
    said = [r.getMessage() for r in caplog.records if r.name == "sftflow.tuning.intent"]
    assert "waiting for its job" in said[0] and "taking it over" in said[1], said
    assert f"submitted job {name} for key kstale" in said
    assert len(_creates(server)) == 1
    taken = json.loads(storage.read_text(claim_uri(claims, "kstale", [], 1)))
    assert taken["job"] == name and taken["owner"] == claims.owner

    old = dict(dead, key="kold", claimed_at=time.time() - 3600)
    assert storage.create_if_absent(claim_uri(claims, "kold", [], 0), json.dumps(old).encode())
    start = time.monotonic()
    ensure_job(tuner, _spec("kold", train), claims=claims)
    assert time.monotonic() - start < 2.0  # no wait for a claim an hour old
    assert len(_creates(server)) == 2


@pytest.mark.slow
@pytest.mark.parametrize("one_owner", [False, True], ids=["owner-per-thread", "one-process-owner"])
def test_claim_threads_race_one_submit_and_the_loser_attaches(make_vertex_server, vertex_settings_for, datasets,
                                                              one_owner):
    server = make_vertex_server(job_phases=(5.0, 5.0))
    server.hold_lists(3)
    bucket, train, _ = datasets
    root = storage.join(bucket, "claims", "tuning")
    results: dict[int, tuple[str, bool]] = {}

    def run(i: int) -> None:
        tuner = VertexTuner(vertex_settings_for(server))
        owner = "process" if one_owner else f"t{i}"  # threads of one process share its owner id
        results[i] = ensure_job(tuner, _spec("krace", train), claims=Claims(root, wait_step=0.2, owner=owner))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 3 and len(_creates(server)) == 1
    assert {name for name, _ in results.values()} == set(server.job_names)
    assert sorted(attached for _, attached in results.values()) == [False, True, True]


# --------------------------------------------------------------------------- nothing submitted unvalidated


@pytest.mark.slow
def test_tune_refuses_bad_files_before_any_tuning_request(make_vertex_server, gcs_emulator, gcs_bucket, tmp_path,
                                                          prefect_api_env):
    server = make_vertex_server()
    bad_train = f"{gcs_bucket}/incoming/train.jsonl"
    storage.write_bytes(bad_train, GOOD + b'{"contents":[{"role":"assistant","parts":[{"text":"x"}]}]}\n')
    (tmp_path / "w").mkdir()
    # both in the bucket: local files are refused before Prefect starts (tests/test_first_hour.py); these reach
    # the flow's own check, which must stop the run before any tuning request
    bad_val = f"{gcs_bucket}/incoming/val.jsonl"
    storage.write_bytes(bad_val, GOOD + b"{not json\n")
    env = _env(tmp_path, gcs_emulator, "bad", SFTFLOW_VERTEX_ACCESS_TOKEN=TEST_TOKEN,
               SFTFLOW_VERTEX_BASE_URL=server.base_url, **prefect_api_env)
    proc = _start_tune(server, env, gcs_bucket, bad_train, str(bad_val), tmp_path / "w" / "root")
    out = _finish(proc)
    assert proc.returncode == 1, out[-3000:]
    # only the preflight's read-only probes (sftflow doctor): no job created, no job listed for the data
    probes = [r for r in server.requests
              if (r["method"] == "POST" and r["path"].endswith(":countTokens") and "sftflow doctor" in json.dumps(r["body"]))
              or (r["method"] == "POST" and r["path"].endswith(":testIamPermissions"))
              or (r["method"] == "GET" and r["path"].endswith("/tuningJobs") and "pageSize=1" in r["query"])]
    assert server.requests == probes, [(r["method"], r["path"]) for r in server.requests]
    errors = out[out.index("sftflow: error: "):].splitlines()
    assert errors[0].startswith(f"sftflow: error: {bad_train}:2: contents[0].role: ")
    assert any(line.startswith(f"{bad_val}:2: ") for line in errors)
    assert "checks" not in "\n".join(errors)  # the internal download path is never what the user reads


# --------------------------------------------------------------------------- network etiquette


def test_unknown_job_state_is_logged_once_and_polled_as_running(make_vertex_server, vertex_settings_for, datasets,
                                                                caplog):
    server = make_vertex_server(job_phases=(0.0, 0.0))
    tuner = VertexTuner(vertex_settings_for(server))
    name = tuner.submit(_spec("kunknown", datasets[1]))
    server.state_override = "JOB_STATE_H3_NEWLY_INVENTED"
    polls: list[JobState] = []

    def on_update(status, elapsed):
        polls.append(status.state)
        if len(polls) == 5:
            server.state_override = None  # the job then reports its real state, SUCCEEDED

    with caplog.at_level(logging.WARNING, logger="sftflow.backends.vertex"):
        final = await_job(tuner, name, poll_interval=0.05, timeout=30, on_update=on_update)
    assert final.state is JobState.SUCCEEDED
    assert polls[:5] == [JobState.RUNNING] * 5
    warnings = [r.getMessage() for r in caplog.records if "JOB_STATE_H3_NEWLY_INVENTED" in r.getMessage()]
    assert len(warnings) == 1 and "treating it as still running" in warnings[0]
    # the state is off this revision of Google's API description on purpose (a state a newer API adds): the
    # strict server records each such answer; they are exactly the 5 overridden polls, and nothing else
    assert len(server.failures) == 5 and all("JOB_STATE_H3_NEWLY_INVENTED" in f for f in server.failures)
    server.failures.clear()


def test_poll_interval_has_a_minimum():
    with pytest.raises(ConfigError) as err:
        load_settings(poll_interval=0.2)
    assert str(err.value) == ("invalid configuration: poll_interval (SFTFLOW_POLL_INTERVAL): at least 1 s between "
                              "tuning-job polls (each poll is an API request), got 0.2")
    assert load_settings(poll_interval=1).poll_interval == 1
    proc = subprocess.run([sys.executable, "-m", "sftflow.cli.main", "tune", "--poll-interval", "0.5"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0
    assert "poll_interval" in proc.stderr and "at least 1 s" in proc.stderr


@pytest.mark.slow
def test_failed_cancel_on_ctrl_c_is_logged_and_the_interrupt_wins(make_vertex_server, gcs_emulator, datasets,
                                                                  tmp_path, prefect_api_env):
    server = make_vertex_server(job_phases=(1.0, 120.0))
    bucket, train, val = datasets
    (tmp_path / "w").mkdir()
    env = _env(tmp_path, gcs_emulator, "cancel", SFTFLOW_VERTEX_ACCESS_TOKEN=TEST_TOKEN,
               SFTFLOW_VERTEX_BASE_URL=server.base_url, **prefect_api_env)
    proc = _start_tune(server, env, bucket, train, val, tmp_path / "w" / "root")
    deadline = time.monotonic() + 180
    while server.count("GET", "/tuningJobs/") < 2:
        assert time.monotonic() < deadline and proc.poll() is None, "the flow never polled the job"
        time.sleep(0.1)
    server.cancel_fault = 500
    os.kill(proc.pid, signal.SIGINT)
    out = _finish(proc, timeout=120)
    cancels = [r["status"] for r in server.requests if r["path"].endswith(":cancel")]
    assert cancels and set(cancels) == {500}, out[-3000:]
    assert re.search(r"cancelling tuning job \S+ failed \(.*HTTP 500", out), out[-3000:]
    assert proc.returncode == 130 and "sftflow: interrupted" in out, out[-3000:]
