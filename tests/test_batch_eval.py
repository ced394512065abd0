"""Batch evaluation against the Vertex-shaped server's batchPredictionJobs and the GCS emulator,
through the real google-genai SDK: shuffled output, failed rows, PENDING past the timeout, a
SIGKILLed caller, and online vs batch giving the same numbers."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from google.genai import errors as genai_errors

from sftflow.evaluation import stats
from sftflow.infra import storage
from sftflow.backends.base import GenerationParams
from sftflow.backends.vertex import VertexGenerator
from sftflow.backends.vertex_client import make_genai_client
from sftflow.evaluation.batch.jobs import VertexBatchJobs
from sftflow.evaluation.batch.requests import requests_jsonl
from sftflow.evaluation.batch.run import BatchOptions, BatchPendingTimeout, evaluate_batch
from sftflow.data.testset import TestExample
from sftflow.evaluation.engine import evaluate
from sftflow.evaluation.report import batch_lines

PARAMS = GenerationParams(temperature=0.1, max_output_tokens=256, safety_threshold="BLOCK_ONLY_HIGH", timeout_s=10)


def examples(n: int, prefix: str = "") -> list[TestExample]:
    """`n` test examples with the codelab's prompt shape; ids that are and are not label values."""
    out = []
    for i in range(n):
        ex_id = f"{prefix}{i}" if i % 7 else f"{prefix}Ex {i}/α"  # the latter travels as a hash label
        text = (f"Summarize the following article: Story {i} begins here. It has words w{i} x{i % 13} y{i % 5}. "
                f"More text {i * 7}.")
        out.append(TestExample(ex_id, text, f"Story {i} begins here.", i + 2))
    return out


@pytest.fixture
def setup(make_vertex_server, gcs_bucket, vertex_settings_for, tmp_path):
    server = make_vertex_server()
    server.batch.timeline = (("PENDING", 0.2), ("RUNNING", 0.4))
    settings = vertex_settings_for(server, bucket=gcs_bucket)
    return server, settings, gcs_bucket, tmp_path


def _options(bucket: str, name: str = "ev", **kw) -> BatchOptions:
    kw.setdefault("poll_interval", 0.1)
    kw.setdefault("online_below", 5)
    return BatchOptions(root=f"{bucket}/runs/t/evaluations/{name}/batch", **kw)


def _online(settings, model: str, checkpoint: Path):
    gen = VertexGenerator(settings, model)
    return lambda todo: evaluate(gen, todo, params=PARAMS, checkpoint=checkpoint, concurrency=4, rpm=60000,
                                 max_attempts=3)


# --------------------------------------------------------------------------- the server


def test_server_refuses_what_vertex_refuses(setup):
    server, settings, bucket, _ = setup
    client = make_genai_client(settings)
    src = f"{bucket}/in/input.jsonl"
    storage.write_text(src, requests_jsonl(examples(3), PARAMS, lambda ex: ex.input_text))
    cases = [
        (dict(model="gemini-9-ultra", src=src, config={"dest": f"{bucket}/out"}), 404),
        (dict(model="gemini-2.5-flash", src=f"{bucket}/in/missing.jsonl", config={"dest": f"{bucket}/out"}), 400),
        (dict(model="gemini-2.5-flash", src=src, config={"dest": "gs://no-such-bucket-xyz/out"}), 400),
        (dict(model="projects/test-project/locations/us-central1/models/404404", src=src,
              config={"dest": f"{bucket}/out"}), 404),
    ]
    for kw, code in cases:
        with pytest.raises(genai_errors.APIError) as err:
            client.batches.create(**kw)
        assert err.value.code == code, (kw, err.value)
    assert server.batch.creates == 0


def test_server_runs_a_job_shuffles_rows_and_fails_some(setup):
    server, settings, bucket, _ = setup
    server.batch.fail_rate = 0.3
    client = make_genai_client(settings)
    exs = examples(40)
    src = f"{bucket}/in/input.jsonl"
    storage.write_text(src, requests_jsonl(exs, PARAMS, lambda ex: ex.input_text))
    job = client.batches.create(model="gemini-2.5-flash", src=src,
                                config={"dest": f"{bucket}/out", "display_name": "sftflow-eval-bx"})
    assert job.state.name == "JOB_STATE_PENDING"
    deadline = time.time() + 10
    while job.state.name not in ("JOB_STATE_SUCCEEDED",) and time.time() < deadline:
        time.sleep(0.1)
        job = client.batches.get(name=job.name)
    assert job.state.name == "JOB_STATE_SUCCEEDED"
    stats_ = job.completion_stats
    assert stats_.successful_count + stats_.failed_count == 40 and 0 < stats_.failed_count < 40
    rows = [json.loads(x) for u in storage.list_uris(job.output_info.gcs_output_directory)
            for x in storage.read_text(u).splitlines()]
    labels = [r["request"]["labels"]["sftflow-id"] for r in rows]
    assert len(rows) == 40
    order = [json.loads(x)["request"]["labels"]["sftflow-id"] for x in storage.read_text(src).splitlines()]
    assert labels != order and sorted(labels) == sorted(order)  # every row, not in input order
    failed = [r for r in rows if r["status"]]
    assert len(failed) == stats_.failed_count and all("response" not in r for r in failed)
    listed = list(client.batches.list(config={"filter": 'display_name="sftflow-eval-bx"'}))
    assert [j.name for j in listed] == [job.name]
    with pytest.raises(genai_errors.APIError) as err:  # an ended job cannot be cancelled
        client.batches.cancel(name=job.name)
    assert err.value.code == 400


# --------------------------------------------------------------------------- evaluation


def test_a_few_hundred_examples_with_failed_rows_are_each_scored_exactly_once(setup):
    server, settings, bucket, tmp_path = setup
    server.batch.fail_rate = 0.1
    exs = examples(300)
    ckpt = tmp_path / "ck.jsonl"
    seen = []
    results, notes = evaluate_batch(VertexBatchJobs(settings), exs, model="gemini-2.5-flash",
                                    batch_model="gemini-2.5-flash", params=PARAMS, checkpoint=ckpt,
                                    options=_options(bucket), on_progress=lambda d, t, i: seen.append((d, t, dict(i))))
    assert [r.id for r in results] == [ex.id for ex in exs]
    assert all(r.scored for r in results)
    lines = [json.loads(x)["id"] for x in ckpt.read_text().splitlines()]
    assert sorted(lines) == sorted(ex.id for ex in exs)  # each example answered (and paid for) once
    assert server.batch.creates == 2 and notes.jobs[0]["failed"] > 10  # round 2 asked the failed rows again
    assert notes.jobs[1]["succeeded"] == notes.jobs[0]["failed"] and notes.online_examples == 0
    assert server.count("POST", ":generateContent") == 0
    assert seen[-1][0] == 300 and any(i.get("state") == "RUNNING" for _, _, i in seen)

    again, _ = evaluate_batch(VertexBatchJobs(settings), exs, model="gemini-2.5-flash",
                              batch_model="gemini-2.5-flash", params=PARAMS, checkpoint=ckpt, options=_options(bucket))
    assert server.batch.creates == 2 and [r.to_dict() for r in again] == [r.to_dict() for r in results]


def test_few_failed_rows_go_online_and_online_equals_batch_exactly(setup):
    server, settings, bucket, tmp_path = setup
    server.batch.fail_marker = "w3 "  # rows of story 3 always fail in batch
    exs = examples(60)
    ckpt = tmp_path / "batch.jsonl"
    batch, notes = evaluate_batch(VertexBatchJobs(settings), exs, model="gemini-2.5-flash",
                                  batch_model="gemini-2.5-flash", params=PARAMS, checkpoint=ckpt,
                                  options=_options(bucket, online_below=5),
                                  online=_online(settings, "gemini-2.5-flash", ckpt))
    assert server.batch.creates == 1 and notes.fallback == "few-failed-rows" and notes.online_examples == 1
    online = evaluate(VertexGenerator(settings, "gemini-2.5-flash"), exs, params=PARAMS,
                      checkpoint=tmp_path / "online.jsonl", concurrency=4, rpm=60000, max_attempts=3)
    assert [r.output for r in batch] == [r.output for r in online]
    comparison = stats.compare(online, batch, seed=0)
    assert comparison.n_paired == 60 and comparison.metrics
    for mc in comparison.metrics.values():
        assert mc.difference == 0.0 and mc.ties == 60


def test_pending_past_the_timeout_is_cancelled_once_and_falls_back_online(setup):
    server, settings, bucket, tmp_path = setup
    server.batch.pending_s = 3600
    exs = examples(12)
    ckpt = tmp_path / "ck.jsonl"
    results, notes = evaluate_batch(VertexBatchJobs(settings), exs, model="gemini-2.5-flash",
                                    batch_model="gemini-2.5-flash", params=PARAMS, checkpoint=ckpt,
                                    options=_options(bucket, pending_timeout=0.5),
                                    online=_online(settings, "gemini-2.5-flash", ckpt))
    assert all(r.scored for r in results) and notes.fallback == "pending-timeout"
    assert server.batch.creates == 1 and server.batch.cancels == 1
    assert server.count("POST", ":generateContent") == 12
    assert any("PENDING" in line for line in batch_lines(notes.to_dict()))
    # a rerun neither queues a new job nor cancels again: the fallback was recorded
    evaluate_batch(VertexBatchJobs(settings), exs, model="gemini-2.5-flash", batch_model="gemini-2.5-flash",
                   params=PARAMS, checkpoint=ckpt, options=_options(bucket, pending_timeout=0.5),
                   online=_online(settings, "gemini-2.5-flash", ckpt))
    assert server.batch.creates == 1 and server.batch.cancels == 1


def test_pending_timeout_without_fallback_is_a_clear_error(setup):
    server, settings, bucket, tmp_path = setup
    server.batch.pending_s = 3600
    with pytest.raises(BatchPendingTimeout, match="batch_pending_timeout"):
        evaluate_batch(VertexBatchJobs(settings), examples(3), model="gemini-2.5-flash",
                       batch_model="gemini-2.5-flash", params=PARAMS, checkpoint=tmp_path / "ck.jsonl",
                       options=_options(bucket, pending_timeout=0.3, fallback_online=False),
                       online=lambda todo: [])
    assert server.batch.cancels == 1


def test_an_interrupt_while_waiting_cancels_the_job(setup):
    server, settings, bucket, tmp_path = setup
    server.batch.pending_s = 3600
    polls = []

    def sleep(seconds):
        polls.append(seconds)
        if len(polls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate_batch(VertexBatchJobs(settings), examples(3), model="gemini-2.5-flash",
                       batch_model="gemini-2.5-flash", params=PARAMS, checkpoint=tmp_path / "ck.jsonl",
                       options=_options(bucket), sleep=sleep)
    assert server.batch.creates == 1 and server.batch.cancels == 1


_CHILD = """
import sys
from sftflow.backends.base import GenerationParams
from sftflow.evaluation.batch.jobs import VertexBatchJobs
from sftflow.evaluation.batch.run import BatchOptions, evaluate_batch
from sftflow.config import Settings
from tests.test_batch_eval import PARAMS, examples
url, bucket, ckpt = sys.argv[1:4]
s = Settings(_env_file=None, backend="vertex", project="test-project", region="us-central1", bucket=bucket,
             vertex_base_url=url, vertex_access_token="test-token-s3cr3t-do-not-log")
evaluate_batch(VertexBatchJobs(s), examples(50), model="gemini-2.5-flash", batch_model="gemini-2.5-flash",
               params=PARAMS, checkpoint=ckpt, options=BatchOptions(root=bucket + "/runs/t/evaluations/ev/batch",
               poll_interval=0.1, online_below=5))
"""


@pytest.mark.slow
def test_a_caller_killed_mid_job_and_rerun_creates_no_second_job(setup):
    server, settings, bucket, tmp_path = setup
    server.batch.timeline = (("PENDING", 3.0), ("RUNNING", 0.5))
    ckpt = tmp_path / "ck.jsonl"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    child = subprocess.Popen([sys.executable, "-c", _CHILD, server.base_url, bucket, str(ckpt)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 60
        while server.batch.creates == 0 and time.time() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert server.batch.creates == 1, child.stdout.read().decode() if child.poll() is not None else "no job"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    results, notes = evaluate_batch(VertexBatchJobs(settings), examples(50), model="gemini-2.5-flash",
                                    batch_model="gemini-2.5-flash", params=PARAMS, checkpoint=ckpt,
                                    options=_options(bucket))
    assert server.batch.creates == 1 and notes.jobs[0]["attached"] is True
    assert all(r.scored for r in results) and len(ckpt.read_text().splitlines()) == 50


def test_the_evaluate_step_in_batch_mode_reports_progress_over_all_examples(setup):
    from sftflow.evaluation.step import EvalSpec, answer

    server, settings, bucket, tmp_path = setup
    server.batch.fail_marker = "w3 "  # story 3's row fails in batch: it is asked online
    s = settings.model_copy(update={"eval_mode": "batch", "batch_poll_interval": 1.0, "batch_online_below": 5})
    seen = []
    spec = dataclasses.replace(EvalSpec.from_settings(s), generation=PARAMS)
    results, mode, notes = answer(spec, "gemini-2.5-flash", examples(20), checkpoint=tmp_path / "ck.jsonl",
                                  batch_root=f"{bucket}/b", on_progress=lambda d, t, i: seen.append((d, t)))
    assert mode == "batch" and notes["online_examples"] == 1 and all(r.scored for r in results)
    assert {t for _, t in seen} == {20} and seen[-1] == (20, 20)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)  # never goes backwards


def test_two_callers_at_once_share_one_job(setup):
    import threading

    server, settings, bucket, tmp_path = setup
    out: dict[int, list] = {}

    def run(i: int) -> None:
        out[i], _ = evaluate_batch(VertexBatchJobs(settings), examples(30), model="gemini-2.5-flash",
                                   batch_model="gemini-2.5-flash", params=PARAMS, checkpoint=tmp_path / f"ck{i}.jsonl",
                                   options=_options(bucket, claim_owner=f"machine-{i}"))  # two hosts

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert server.batch.creates == 1
    assert [r.output for r in out[0]] == [r.output for r in out[1]] and all(r.scored for r in out[0])


def test_429_and_503_from_the_service_are_retried_without_a_second_job(setup):
    server, settings, bucket, tmp_path = setup
    server.set_faults(0.3, (429, 503))
    results, _ = evaluate_batch(VertexBatchJobs(settings), examples(30), model="gemini-2.5-flash",
                                batch_model="gemini-2.5-flash", params=PARAMS, checkpoint=tmp_path / "ck.jsonl",
                                options=_options(bucket), sleep=lambda s: time.sleep(min(s, 0.1)))
    assert all(r.scored for r in results)
    assert server.batch.creates == 1 and sum(r["status"] in (429, 503) for r in server.requests) > 0


def test_server_fails_bad_rows_and_bad_files_as_vertex_does(setup):
    server, settings, bucket, _ = setup
    client = make_genai_client(settings)
    good = requests_jsonl(examples(2), PARAMS, lambda ex: ex.input_text)
    bad_row = json.dumps({"request": {"contents": [], "labels": {"sftflow-id": "bad"}}}) + "\n"
    storage.write_text(f"{bucket}/in/rows.jsonl", good + bad_row)
    storage.write_text(f"{bucket}/in/file.jsonl", good + "{not json\n")
    jobs = [client.batches.create(model="gemini-2.5-flash", src=f"{bucket}/in/{n}.jsonl",
                                  config={"dest": f"{bucket}/out/{n}"}) for n in ("rows", "file")]
    deadline = time.time() + 10
    while time.time() < deadline and not all(client.batches.get(name=j.name).done for j in jobs):
        time.sleep(0.1)
    rows_job, file_job = (client.batches.get(name=j.name) for j in jobs)
    assert rows_job.state.name == "JOB_STATE_SUCCEEDED" and rows_job.completion_stats.failed_count == 1
    out = [json.loads(x) for u in storage.list_uris(rows_job.output_info.gcs_output_directory)
           for x in storage.read_text(u).splitlines()]
    (failed,) = [r for r in out if r["status"]]
    assert failed["request"]["labels"] == {"sftflow-id": "bad"} and "contents" in failed["status"]
    assert file_job.state.name == "JOB_STATE_FAILED" and "line 3" in file_job.error.message


def test_a_failed_job_is_not_retried_in_batch_but_online(setup):
    server, settings, bucket, tmp_path = setup
    server.batch.outcome = "FAILED"
    ckpt = tmp_path / "ck.jsonl"
    results, notes = evaluate_batch(VertexBatchJobs(settings), examples(8), model="gemini-2.5-flash",
                                    batch_model="gemini-2.5-flash", params=PARAMS, checkpoint=ckpt,
                                    options=_options(bucket), online=_online(settings, "gemini-2.5-flash", ckpt))
    assert server.batch.creates == 1 and notes.fallback.startswith("batch job FAILED")
    assert all(r.scored for r in results) and server.count("POST", ":generateContent") == 8


def test_a_failed_job_without_online_fallback_leaves_errors_naming_it(setup):
    server, settings, bucket, tmp_path = setup
    server.batch.outcome = "FAILED"
    results, notes = evaluate_batch(VertexBatchJobs(settings), examples(4), model="gemini-2.5-flash",
                                    batch_model="gemini-2.5-flash", params=PARAMS, checkpoint=tmp_path / "ck.jsonl",
                                    options=_options(bucket, fallback_online=False),
                                    online=lambda todo: pytest.fail("went online"))
    assert server.batch.creates == 1 and notes.online_examples == 0
    assert all(r.error and "batch job FAILED" in r.error for r in results)
