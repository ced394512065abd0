"""The Vertex-shaped test server answers the real Google SDKs the way Vertex AI does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import google.oauth2.credentials
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from tests.servers.vertex_server import VertexTestServer

ROOT = Path(__file__).resolve().parents[1]
PARENT = "projects/test-project/locations/us-central1"


def client(server: VertexTestServer) -> genai.Client:
    return genai.Client(
        vertexai=True,
        project=server.project,
        location=server.location,
        credentials=google.oauth2.credentials.Credentials(token="t"),
        http_options=types.HttpOptions(base_url=server.base_url, timeout=5000),
    )


def http(server, method, path, body=None, token="t"):
    req = urllib.request.Request(
        server.base_url + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"} if token else {},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def tune(c: genai.Client, key: str = "kabc", val: bool = True) -> types.TuningJob:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", genai_errors.ExperimentalWarning)
        return c.tunings.tune(
            base_model="gemini-2.5-flash",
            training_dataset=types.TuningDataset(gcs_uri="gs://b/train.jsonl"),
            config=types.CreateTuningJobConfig(
                epoch_count=2,
                adapter_size=types.AdapterSize.ADAPTER_SIZE_FOUR,
                tuned_model_display_name="tuned",
                validation_dataset=types.TuningValidationDataset(gcs_uri="gs://b/val.jsonl") if val else None,
                labels={"sftflow-key": key},
            ),
        )


def test_generate_content_base_and_endpoint_paths(vertex_server):
    c = client(vertex_server)
    prompt = "Summarize this article:\n\n" + "One two three. " + " ".join(f"w{i}" for i in range(40))
    base = c.models.generate_content(model="gemini-2.5-flash", contents=prompt)
    assert base.text.split() == (["One", "two", "three."] + [f"w{i}" for i in range(17)])
    tuned = c.models.generate_content(model=f"{PARENT}/endpoints/42", contents=prompt)
    assert tuned.text == "One two three."
    assert vertex_server.count("POST", "/v1beta1/" + PARENT + "/publishers/google/models/gemini-2.5-flash:generateContent") == 1
    assert vertex_server.count("POST", f"/v1beta1/{PARENT}/endpoints/42:generateContent") == 1
    assert all(r["authorized"] for r in vertex_server.requests)
    # the v1 API version is served too
    status, body = http(vertex_server, "POST", f"/v1/{PARENT}/endpoints/42:generateContent",
                        {"contents": [{"role": "user", "parts": [{"text": "A b. C"}]}]})
    assert status == 200 and body["candidates"][0]["content"]["parts"][0]["text"] == "A b."


def test_blocked_empty_and_max_tokens(vertex_server):
    c = client(vertex_server)
    blocked = c.models.generate_content(model="gemini-2.5-flash", contents="x [[BLOCK]]")
    assert blocked.prompt_feedback.block_reason == types.BlockedReason.SAFETY and not blocked.candidates
    empty = c.models.generate_content(model="gemini-2.5-flash", contents="x [[EMPTY]]")
    assert empty.text is None and empty.candidates[0].finish_reason == types.FinishReason.STOP
    cut = c.models.generate_content(
        model="gemini-2.5-flash", contents="a b c d e", config=types.GenerateContentConfig(max_output_tokens=2)
    )
    assert cut.text == "a b" and cut.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS


def test_auth_required_and_unknown_paths(make_vertex_server):
    server = make_vertex_server(require_token="right")
    assert http(server, "POST", f"/v1beta1/{PARENT}/tuningJobs", {}, token=None)[0] == 401
    assert http(server, "POST", f"/v1beta1/{PARENT}/tuningJobs", {}, token="wrong")[0] == 401
    status, body = http(server, "GET", "/v1beta1/nope", token="right")
    assert status == 404 and body["error"]["status"] == "NOT_FOUND"
    status, body = http(server, "GET", "/v1beta1/projects/other/locations/us-central1/tuningJobs", token="right")
    assert status == 404


def test_faults_are_seeded_and_switchable(make_vertex_server):
    def pattern(seed):
        server = make_vertex_server(fault_rate=0.5, fault_codes=(429, 503), seed=seed)
        return [http(server, "GET", f"/v1beta1/{PARENT}/tuningJobs")[0] for _ in range(30)], server

    first, server = pattern(7)
    again, _ = pattern(7)
    assert first == again and set(first) == {200, 429, 503}
    status, body = http(server, "GET", f"/v1beta1/{PARENT}/tuningJobs")
    server.set_faults(0.0)
    assert all(http(server, "GET", f"/v1beta1/{PARENT}/tuningJobs")[0] == 200 for _ in range(10))
    assert [r["status"] for r in server.requests[:30]] == first


def test_latency_is_concurrent_not_serialized(make_vertex_server):
    from concurrent.futures import ThreadPoolExecutor

    server = make_vertex_server(latency_s=0.3)
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: http(server, "POST", f"/v1beta1/{PARENT}/endpoints/1:generateContent", body)[0], range(8)))
    elapsed = time.perf_counter() - start
    assert codes == [200] * 8
    assert 0.3 <= elapsed < 1.8  # 8 × 0.3 s serialized would be 2.4 s


def test_tuning_job_lifecycle_list_filter_and_cancel(make_vertex_server):
    server = make_vertex_server(job_phases=(0.2, 0.3))
    c = client(server)
    job = tune(c, "kone")
    other = tune(c, "ktwo", val=False)
    assert job.state == types.JobState.JOB_STATE_PENDING
    assert job.name.startswith(f"{PARENT}/tuningJobs/")
    created = server.requests[0]["body"]
    assert created["labels"] == {"sftflow-key": "kone"}
    assert created["supervisedTuningSpec"]["hyperParameters"] == {"epochCount": 2, "adapterSize": "ADAPTER_SIZE_FOUR"}
    time.sleep(0.25)
    assert c.tunings.get(name=job.name).state == types.JobState.JOB_STATE_RUNNING
    c.tunings.cancel(name=other.name)
    cancelled = c.tunings.get(name=other.name)
    assert cancelled.state == types.JobState.JOB_STATE_CANCELLED and cancelled.has_ended
    time.sleep(0.35)
    done = c.tunings.get(name=job.name)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED
    assert done.tuned_model.model.endswith("@1") and "/endpoints/" in done.tuned_model.endpoint
    stats = done.tuning_data_stats.supervised_tuning_data_stats
    assert stats.total_billable_token_count == 100 * 250 * 2 and stats.tuning_dataset_example_count == 100
    # cancelling an ended job is refused, as on Vertex
    with pytest.raises(genai_errors.ClientError) as err:
        c.tunings.cancel(name=job.name)
    assert err.value.code == 400
    # the SDK sends the filter verbatim as ?filter=; quoted and bare values both match
    assert [j.name for j in c.tunings.list(config={"filter": 'labels.sftflow-key="kone"'})] == [job.name]
    assert [j.name for j in c.tunings.list(config={"filter": "labels.sftflow-key=ktwo"})] == [other.name]
    assert list(c.tunings.list(config={"filter": "labels.sftflow-key=none"})) == []
    assert [j.name for j in c.tunings.list()] == [other.name, job.name]  # newest first
    assert server.count("GET", "filter=labels.sftflow-key") == 3
    with pytest.raises(genai_errors.ClientError):
        list(c.tunings.list(config={"filter": 'state="JOB_STATE_RUNNING"'}))


def test_list_pages(make_vertex_server):
    server = make_vertex_server()
    c = client(server)
    names = [tune(c, f"k{i}").name for i in range(5)]
    listed = [j.name for j in c.tunings.list(config={"page_size": 2})]
    assert listed == names[::-1]
    assert server.count("GET", "pageToken=") == 2


def test_failed_job_and_bad_requests(make_vertex_server):
    server = make_vertex_server(job_phases=(0.0, 0.0), job_outcome="FAILED")
    c = client(server)
    job = c.tunings.get(name=tune(c).name)
    assert job.state == types.JobState.JOB_STATE_FAILED
    assert job.error.message == "Dataset row 3: invalid role" and job.tuned_model is None
    status, body = http(server, "POST", f"/v1beta1/{PARENT}/tuningJobs",
                        {"baseModel": "m", "supervisedTuningSpec": {"trainingDatasetUri": "gs://b/x.csv"}})
    assert status == 400 and "JSONL" in body["error"]["message"]
    status, body = http(server, "POST", f"/v1beta1/{PARENT}/tuningJobs",
                        {"baseModel": "m", "supervisedTuningSpec": {"trainingDatasetUri": "gs://b/x.jsonl"},
                         "labels": {"Key": "UPPER"}})
    assert status == 400 and "label" in body["error"]["message"]


def test_aiplatform_sdk_undeploy_and_delete(make_vertex_server, caplog):
    """The high-level aiplatform SDK (as the codelab's cleanup uses it) works against the server."""
    from google.cloud import aiplatform
    from google.cloud.aiplatform import initializer

    server = make_vertex_server(job_phases=(0.0, 0.0))
    c = client(server)  # a genai.Client closes its connection pool when garbage-collected
    job = c.tunings.get(name=tune(c).name)
    try:
        aiplatform.init(project=server.project, location=server.location, api_endpoint=server.base_url,
                        api_transport="rest", credentials=google.oauth2.credentials.Credentials(token="t"))
        endpoint = aiplatform.Endpoint(job.tuned_model.endpoint)
        assert len(endpoint.list_models()) == 1
        endpoint.delete(force=True)
        aiplatform.Model(job.tuned_model.model).delete()
    finally:
        initializer.global_config.__init__()  # aiplatform.init is process-global: undo it
    ep_path, model_path = "/v1/" + job.tuned_model.endpoint, "/v1/" + job.tuned_model.model.split("@")[0]
    assert server.count("POST", ep_path + ":undeployModel") == 1
    assert server.count("DELETE", ep_path) == 1 and server.count("DELETE", model_path) == 1
    assert http(server, "GET", ep_path)[0] == 404 and http(server, "GET", model_path)[0] == 404


def test_standalone_prints_url_and_stops_on_sigterm():
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.servers.vertex_server", "--port", "0", "--latency", "0.05"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        server = VertexTestServer()
        server.base_url = url
        assert http(server, "GET", f"/v1beta1/{PARENT}/tuningJobs") == (200, {})
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
