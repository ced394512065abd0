"""The sweep flow against the Vertex-shaped server + GCS emulator (real SDKs), and offline on `local`."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time

import pytest

from flows.sweep import sweep
from sftflow.selection import champion
from sftflow.infra import storage
from sftflow.data.samples import sample_paths
from sftflow.selection.grid import GridCostCapExceeded
from tests import cliproc
from tests.servers.vertex_fixtures import TEST_TOKEN, flow_config
from tests.smalldata import small_samples

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("token_in_env")]

def step_sentences(article: str) -> list[str]:
    """The sample articles' instruction sentences ("First, ...", "Finally, ..."): what the references keep."""
    return [x for x in re.split(r"(?<=[.!?])\s+", article) if re.match(r"(First|Next|Then|After that|Finally)\b", x)]


def tuned_answer(hyper: dict, epoch: int, article: str) -> str:
    """Answer quality by configuration: adapter 8 or 16 answers every step (strong), others only the first
    step (weak, still well above the base model's first 20 words); an earlier checkpoint is weak too."""
    steps = step_sentences(article)
    strong = epoch == hyper["epochs"] and hyper["adapter_size"] in ("ADAPTER_SIZE_EIGHT", "ADAPTER_SIZE_SIXTEEN")
    return " ".join(steps if strong else steps[:1])


def sweep_config(server, bucket, tmp_path, **extra) -> dict:
    paths = small_samples(tmp_path)  # the full samples' token count alone took ~45 s per grid
    return flow_config(server, bucket, tmp_path, train_uri=paths["train"], val_uri=paths["val"],
                       test_uri=paths["test"], samples=10, concurrency=4, rpm=6000, **extra)


def _model(server, name: str) -> dict:
    import urllib.request

    req = urllib.request.Request(f"{server.base_url}/v1/{name}", headers={"Authorization": f"Bearer {TEST_TOKEN}"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


def test_grid_runs_at_most_max_parallel_jobs_ranks_checkpoints_and_reruns_free(make_vertex_server, gcs_bucket,
                                                                              tmp_path):
    server = make_vertex_server(job_phases=(0.5, 2.0), tuned_answer=tuned_answer)
    config = sweep_config(server, gcs_bucket, tmp_path)
    out = sweep(epochs="1,2", adapter_size="4,8", max_parallel=2, evaluate_checkpoints=True, config=config)

    assert server.count("POST", "/tuningJobs") == 4
    assert server.max_active_jobs() == 2  # parallel, and never more than the limit
    assert out["leaderboard_uri"] == f"{gcs_bucket}/runs/default/sweep/leaderboard.json"
    board = json.loads(storage.read_text(out["leaderboard_uri"]))
    labels = {e["label"] for e in board["entries"]}
    assert labels == {"e1-a4-lr1", "e1-a8-lr1", "e2-a4-lr1", "e2-a8-lr1", "e2-a4-lr1-ckpt1", "e2-a8-lr1-ckpt1"}
    ckpt = next(e for e in board["entries"] if e["label"] == "e2-a8-lr1-ckpt1")
    assert ckpt["checkpoint"]["epoch"] == 1 and ckpt["endpoint"] != ckpt["job"]
    # e1-a8 and e2-a8 answer alike: the tie goes to the cheaper one-epoch job.
    assert board["best"] == "e1-a8-lr1", board["best_reason"]
    best = board["best_entry"]
    assert best["vs_base"]["rougeL"]["ci_low"] > 0 and best["cost_usd"] < board["entries"][1]["cost_usd"]
    base_calls = server.count("POST", "gemini-2.5-flash:generateContent")
    assert base_calls == 10  # the base model is evaluated once for the whole grid
    assert storage.exists(out["plot_uri"]) and "Sweep leaderboard" in storage.read_text(out["report_uri"])

    # First champion: promoted, and the registry alias set through the aiplatform REST surface.
    assert out["champion"]["promoted"] and "no champion yet" in out["champion"]["reason"]
    assert server.count("POST", ":mergeVersionAliases") == 1
    assert "champion" in _model(server, best["tuned_model"])["versionAliases"]

    before = len(server.requests)
    again = sweep(epochs="1,2", adapter_size="4,8", max_parallel=2, evaluate_checkpoints=True, config=config)
    new = server.requests[before:]
    assert not [r for r in new if r["method"] == "POST"]  # no job, no generation, no alias: all reused
    assert again["best"] == "e1-a8-lr1" and "already the champion" in again["champion"]["reason"]
    assert len(champion.history(gcs_bucket)) == 1


def test_champion_is_replaced_only_by_a_significant_win(make_vertex_server, gcs_bucket, tmp_path):
    server = make_vertex_server(job_phases=(0.3, 0.7), tuned_answer=tuned_answer)
    first = sweep(adapter_size="4", config=sweep_config(server, gcs_bucket, tmp_path, run_name="weak"))
    assert first["champion"]["promoted"]

    better = sweep(adapter_size="8", config=sweep_config(server, gcs_bucket, tmp_path, run_name="better"))
    assert better["champion"]["promoted"], better["champion"]["reason"]
    assert "beats champion e1-a4-lr1 on ROUGE-L" in better["champion"]["reason"]
    promoted = better["entries"][0]
    assert "champion" in _model(server, promoted["tuned_model"])["versionAliases"]
    assert "champion" not in _model(server, first["entries"][0]["tuned_model"])["versionAliases"]  # taken off

    same = sweep(adapter_size="16", config=sweep_config(server, gcs_bucket, tmp_path, run_name="same"))
    assert not same["champion"]["promoted"]
    assert "the lower bound is not above promotion_margin 0 points, so e1-a8-lr1 stays champion" in \
        same["champion"]["reason"]
    rec = champion.record(gcs_bucket)
    assert [e["event"] for e in rec["history"]] == ["promoted", "promoted", "kept"]
    assert rec["current"]["model"]["run_name"] == "better"
    assert server.count("POST", ":mergeVersionAliases") == 3  # set, set and take off the replaced one
    assert "champion" not in _model(server, same["entries"][0]["tuned_model"])["versionAliases"]
    report = storage.read_text(same["report_uri"])
    assert "not promoted:" in report and "stays champion" in report


def test_grid_over_the_cost_cap_submits_nothing(make_vertex_server, gcs_bucket, tmp_path):
    server = make_vertex_server()
    config = sweep_config(server, gcs_bucket, tmp_path, max_tuning_cost_usd=0.000001)
    with pytest.raises(GridCostCapExceeded, match=r"grid's 4 new job\(s\) is .*over the cap of \$1e-06"):
        sweep(epochs="1,2", adapter_size="4,8", config=config)
    assert server.count("POST", "/tuningJobs") == 0
    assert server.count("POST", ":generateContent") == 0


def test_grid_above_approve_above_usd_needs_one_approval_for_its_new_jobs(make_vertex_server, gcs_bucket, tmp_path):
    """approval_mode=refuse (the CLI without a terminal) submits nothing; approved proceeds; a rerun whose jobs
    are all committed is not asked again. Small datasets (330 training tokens an epoch), so it stays quick."""
    from sftflow.cost.approval import ApprovalDenied
    from tests.servers.vertex_fixtures import upload_datasets

    server = make_vertex_server(job_phases=(0.2, 0.4))
    line = (b'{"contents":[{"role":"user","parts":[{"text":"' + b"aaa " * 100 + b'"}]},'
            b'{"role":"model","parts":[{"text":"' + b"bbb " * 10 + b'"}]}]}\n')
    _, train, val = upload_datasets(gcs_bucket, line)
    config = flow_config(server, gcs_bucket, tmp_path, train_uri=train, val_uri=val, test_uri=sample_paths()["test"],
                         samples=2, rpm=6000, approve_above_usd=0.001)
    grid = {"epochs": "1,2", "promote": False}

    with pytest.raises(ApprovalDenied) as refused:
        sweep(**grid, config={**config, "approval_mode": "refuse"})
    message = str(refused.value)
    assert "\n" not in message and message.startswith("tuning not approved (not asked: no terminal): estimated cost ")
    assert re.search(r"for the grid's 2 new job\(s\) \(e1-a4-lr1 \$\S+, e2-a4-lr1 \$\S+\) is above "
                     r"approve_above_usd \$0\.001; no job was submitted\. Approve with --approve", message), message
    assert server.count("POST", "/tuningJobs") == 0 and server.count("POST", ":generateContent") == 0

    out = sweep(**grid, config={**config, "approval_mode": "approved"})
    assert server.count("POST", "/tuningJobs") == 2 and {e["label"] for e in out["entries"]} == {"e1-a4-lr1",
                                                                                              "e2-a4-lr1"}
    again = sweep(**grid, config={**config, "approval_mode": "refuse"})  # nothing new to pay: not gated
    assert server.count("POST", "/tuningJobs") == 2 and again["best"] == out["best"]

def _cli_sweep(server, gcs_emulator, bucket, tmp_path, *extra):
    paths = small_samples(tmp_path)
    env = dict(os.environ, STORAGE_EMULATOR_HOST=gcs_emulator, SFTFLOW_VERTEX_BASE_URL=server.base_url,
               SFTFLOW_VERTEX_ACCESS_TOKEN=TEST_TOKEN, PREFECT_HOME=str(tmp_path / "prefect-home"),
               PREFECT_LOGGING_LEVEL="INFO")
    cmd = [sys.executable, "-m", "sftflow.cli.main", "sweep", "--backend", "vertex", "--project", server.project,
           "--bucket", bucket, "--train", paths["train"], "--val", paths["val"], "--test", paths["test"],
           "--samples", "6", "--rpm", "6000", "--poll-interval", "1", "--local-root", str(tmp_path / "root"),
           "--adapter-size", "4,8", "--max-parallel", "2", *extra]

    return cliproc.start(cmd, env, tmp_path)


def _wait_for(condition, timeout=600.0):  # a CLI start took >120 s on 2 cores shared by 8 sessions
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def test_killed_sweep_rerun_attaches_to_the_running_jobs(make_vertex_server, gcs_emulator, gcs_bucket, tmp_path):
    server = make_vertex_server(job_phases=(1.0, 600.0), tuned_answer=tuned_answer)  # run until the test ends them
    proc = _cli_sweep(server, gcs_emulator, gcs_bucket, tmp_path)
    _wait_for(lambda: len(server.job_names) == 2 and server.count("GET", "/tuningJobs/") >= 4)
    os.kill(proc.pid, signal.SIGKILL)
    cliproc.finish(proc)
    polls = server.count("GET", "/tuningJobs/")
    proc = _cli_sweep(server, gcs_emulator, gcs_bucket, tmp_path)
    _wait_for(lambda: server.count("GET", "/tuningJobs/") >= polls + 4)  # both jobs awaited again
    for job in server.job_names:
        server.set_job_state(job, "SUCCEEDED")
    out = cliproc.finish(proc)
    assert proc.returncode == 0, out[-3000:]
    assert server.count("POST", "/tuningJobs") == 2  # the rerun created no job
    assert out.count("attached to existing tuning job") == 2, out[-3000:]
    lines = [x for x in out.strip().splitlines() if not re.match(r"\d\d:\d\d:\d\d\.\d+ \|", x)]  # Prefect's logs
    assert lines[-1] == f"leaderboard: {gcs_bucket}/runs/default/sweep/leaderboard.json"
    assert any(line.startswith("e1-a8-lr1: ROUGE-L") and "<- best" in line for line in lines)
    assert TEST_TOKEN not in out


def test_terminated_sweep_cancels_its_running_jobs(make_vertex_server, gcs_emulator, gcs_bucket, tmp_path):
    """SIGTERM (what a Prefect worker sends to a cancelled run) reaches the flow, not the task threads that
    await the jobs: the flow cancels the grid's unfinished jobs itself (cancel_job_on_interrupt)."""
    server = make_vertex_server(job_phases=(1.0, 600.0))
    proc = _cli_sweep(server, gcs_emulator, gcs_bucket, tmp_path)
    _wait_for(lambda: len(server.job_names) == 2 and server.count("GET", "/tuningJobs/") >= 4)
    os.kill(proc.pid, signal.SIGTERM)
    out = cliproc.finish(proc)
    assert proc.returncode != 0
    assert server.count("POST", ":cancel") == 2, out[-3000:]
    assert out.count("interrupted: cancelling tuning job") == 2


def test_local_grid_runs_offline_one_job_at_a_time_with_epoch_checkpoints(tmp_path):
    root = tmp_path / "root"
    val = tmp_path / "val.jsonl"  # 4 examples: the validation loss is measured every step of this tiny run
    val.write_text("".join(open(sample_paths()["val"]).readlines()[:4]))
    config = {"local_root": str(root), "samples": 6, "limit": 16, "val_uri": str(val), "local_train_budget_s": 60,
              "poll_interval": 1}
    out = sweep(epochs="2", adapter_size="2,4", max_parallel=1, evaluate_checkpoints=True, config=config)
    board = json.loads(storage.read_text(out["leaderboard_uri"]))
    assert out["leaderboard_uri"] == str(root / "runs" / "default" / "sweep" / "leaderboard.json")
    assert {e["label"] for e in board["entries"]} == {"e2-a2-lr1", "e2-a4-lr1", "e2-a2-lr1-ckpt1", "e2-a4-lr1-ckpt1"}
    ckpt = next(e for e in board["entries"] if e["label"] == "e2-a4-lr1-ckpt1")
    assert ckpt["checkpoint"]["epoch"] == 1 and ckpt["endpoint"].endswith("/checkpoints/epoch-1")
    statuses = [json.loads((d / "status.json").read_text()) for d in (root / "work" / "jobs").iterdir()]
    assert len(statuses) == 2
    first, second = sorted(statuses, key=lambda st: st["create_time"])
    assert first["update_time"] <= second["create_time"]  # --max-parallel 1: the second began after the first
    assert [c["epoch"] for c in first["checkpoints"]] == [1, 2]
    assert (root / "runs" / "default" / "sweep" / "leaderboard.png").is_file()
    assert (board["best"] is None) == (out["champion"]["promoted"] is False)
