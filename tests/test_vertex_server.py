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

from tests.servers.vertex_server import TEST_TOKEN, VertexTestServer

ROOT = Path(__file__).resolve().parents[1]
PARENT = "projects/test-project/locations/us-central1"


def client(server: VertexTestServer) -> genai.Client:
    return genai.Client(
        vertexai=True,
        project=server.project,
        location=server.location,
        credentials=google.oauth2.credentials.Credentials(token=TEST_TOKEN),
        http_options=types.HttpOptions(base_url=server.base_url, timeout=5000),
    )


def http(server, method, path, body=None, token=TEST_TOKEN):
    req = urllib.request.Request(
        server.base_url + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"} if token else {},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:  # the first enum error loads the protos (~2 s idle)
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def datasets(tuning_datasets) -> dict[str, str]:
    return tuning_datasets


def tune(c: genai.Client, datasets: dict[str, str], key: str = "kabc", val: bool = True) -> types.TuningJob:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", genai_errors.ExperimentalWarning)
        return c.tunings.tune(
            base_model="gemini-2.5-flash",
            training_dataset=types.TuningDataset(gcs_uri=datasets["train"]),
            config=types.CreateTuningJobConfig(
                epoch_count=2,
                adapter_size=types.AdapterSize.ADAPTER_SIZE_FOUR,
                tuned_model_display_name="tuned",
                validation_dataset=types.TuningValidationDataset(gcs_uri=datasets["val"]) if val else None,
                labels={"sftflow-key": key},
            ),
        )


def wait_for(predicate, timeout=30.0):
    """Poll until predicate() is truthy (generous deadline: the CI machine has 2 busy cores)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


GEN = {"contents": [{"role": "user", "parts": [{"text": "a b c d e"}]}]}


def test_generate_content_base_and_endpoint_paths(vertex_server):
    c = client(vertex_server)
    endpoint = vertex_server.deploy_tuned_model()["endpoint"]
    prompt = "Summarize this article:\n\n" + "One two three. " + " ".join(f"w{i}" for i in range(40))
    base = c.models.generate_content(model="gemini-2.5-flash", contents=prompt)
    assert base.text.split() == (["One", "two", "three."] + [f"w{i}" for i in range(17)])
    tuned = c.models.generate_content(model=endpoint, contents=prompt)
    assert tuned.text == "One two three."
    assert vertex_server.count("POST", "/v1beta1/" + PARENT + "/publishers/google/models/gemini-2.5-flash:generateContent") == 1
    assert vertex_server.count("POST", f"/v1beta1/{endpoint}:generateContent") == 1
    assert all(r["authorized"] for r in vertex_server.requests)
    # the v1 API version is served too
    status, body = http(vertex_server, "POST", f"/v1/{endpoint}:generateContent",
                        {"contents": [{"role": "user", "parts": [{"text": "A b. C"}]}]})
    assert status == 200 and body["candidates"][0]["content"]["parts"][-1]["text"] == "A b."


def test_unknown_base_model_or_endpoint_is_404(vertex_server):
    c = client(vertex_server)
    with pytest.raises(genai_errors.ClientError) as err:
        c.models.generate_content(model="gemini-typo-9", contents="hi")
    assert (err.value.code, err.value.status) == (404, "NOT_FOUND")
    assert err.value.message.startswith(
        f"Publisher Model `{PARENT}/publishers/google/models/gemini-typo-9` was not found")
    for eid in ("777", "42", "1"):
        status, body = http(vertex_server, "POST", f"/v1beta1/{PARENT}/endpoints/{eid}:generateContent", GEN)
        assert (status, body["error"]) == (404, {"code": 404, "status": "NOT_FOUND",
                                                 "message": f"Endpoint `{PARENT}/endpoints/{eid}` not found."})
    # the list of base models is a knob
    server = VertexTestServer(base_models=["gemini-typo-9"], gcs_url="http://unused").start()
    try:
        assert http(server, "POST", f"/v1beta1/{PARENT}/publishers/google/models/gemini-typo-9:generateContent",
                    GEN)[0] == 200
        assert http(server, "POST", f"/v1beta1/{PARENT}/publishers/google/models/gemini-2.5-flash:generateContent",
                    GEN)[0] == 404
    finally:
        server.stop()


def test_tuned_model_and_endpoint_exist_only_once_the_job_succeeded(make_vertex_server, datasets):
    server = make_vertex_server(job_phases=(1.0, 1.0))
    c = client(server)
    job = tune(c, datasets)
    model, endpoint = server.job_outputs(job.name)
    assert c.tunings.get(name=job.name).tuned_model is None
    # PENDING, then RUNNING: neither the endpoint nor the model exists yet (Vertex creates them at the end)
    for state in ("PENDING", "RUNNING"):
        wait_for(lambda: c.tunings.get(name=job.name).state == f"JOB_STATE_{state}")
        assert http(server, "POST", f"/v1beta1/{endpoint}:generateContent", GEN)[0] == 404
        assert http(server, "GET", f"/v1/{endpoint}")[0] == 404
        assert http(server, "GET", f"/v1/{model}")[0] == 404
    done = wait_for(lambda: (j := c.tunings.get(name=job.name)).state == "JOB_STATE_SUCCEEDED" and j)
    assert (done.tuned_model.model, done.tuned_model.endpoint) == (model, endpoint)
    assert http(server, "POST", f"/v1beta1/{endpoint}:generateContent", GEN)[0] == 200
    # a job that fails never produces them
    failed = make_vertex_server(job_phases=(0.0, 0.0), job_outcome="FAILED")
    _, failed_endpoint = failed.job_outputs(tune(client(failed), datasets).name)
    assert http(failed, "POST", f"/v1beta1/{failed_endpoint}:generateContent", GEN)[0] == 404


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
    assert http(server, "POST", f"/v1beta1/{PARENT}/tuningJobs", {}, token=" ")[0] == 401  # an empty "Bearer  "
    status, body = http(server, "GET", "/v1beta1/projects/other/locations/us-central1/tuningJobs", token="right")
    assert (status, body["error"]["status"]) == (403, "PERMISSION_DENIED")  # as Vertex answers a project not yours
    assert "Permission 'aiplatform.tuningJobs.list' denied" in body["error"]["message"]
    # a path no method of Google's API description has (a wrong API version included) → 404
    for path in (f"/v2/{PARENT}/tuningJobs", f"/v1beta1/{PARENT}/tuningJobz", f"/v1/{PARENT}/tuningJobs/1/x"):
        assert http(server, "GET", path, token="right")[0] == 404, path
    # a query parameter the method does not take → 400, in Google's words
    status, body = http(server, "GET", f"/v1beta1/{PARENT}/tuningJobs?pageSize=2&orderBy=name", token="right")
    assert status == 400 and 'Unknown name "orderBy": Cannot bind query parameter' in body["error"]["message"]
    status, body = http(server, "GET", f"/v1beta1/{PARENT}/tuningJobs?pageSize=two", token="right")
    assert status == 400


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
    endpoint = server.deploy_tuned_model()["endpoint"]
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: http(server, "POST", f"/v1beta1/{endpoint}:generateContent", body)[0], range(8)))
    elapsed = time.perf_counter() - start
    assert codes == [200] * 8
    assert 0.3 <= elapsed < 1.8  # 8 × 0.3 s serialized would be 2.4 s


def test_tuning_job_lifecycle_list_filter_and_cancel(make_vertex_server, datasets):
    server = make_vertex_server(job_phases=(1.0, 2.0), cancel_delay_s=2.0)
    c = client(server)
    job = tune(c, datasets, "kone")
    other = tune(c, datasets, "ktwo", val=False)
    assert job.state == types.JobState.JOB_STATE_PENDING
    assert job.name.startswith(f"{PARENT}/tuningJobs/")
    created = server.requests[0]["body"]
    assert created["labels"] == {"sftflow-key": "kone"}
    assert created["supervisedTuningSpec"]["hyperParameters"] == {"epochCount": 2, "adapterSize": "ADAPTER_SIZE_FOUR"}
    wait_for(lambda: c.tunings.get(name=job.name).state == types.JobState.JOB_STATE_RUNNING)
    c.tunings.cancel(name=other.name)
    # Cancelling takes a while on Vertex: the job shows JOB_STATE_CANCELLING, not yet ended, first.
    cancelling = c.tunings.get(name=other.name)
    assert cancelling.state == types.JobState.JOB_STATE_CANCELLING and not cancelling.has_ended
    c.tunings.cancel(name=other.name)  # asking again while it cancels is harmless
    cancelled = wait_for(lambda: (j := c.tunings.get(name=other.name)).state == "JOB_STATE_CANCELLED" and j)
    assert cancelled.has_ended and cancelled.error.message == "CANCELED" and cancelled.tuned_model is None
    done = wait_for(lambda: (j := c.tunings.get(name=job.name)).state == "JOB_STATE_SUCCEEDED" and j)
    assert done.tuned_model.model.endswith("@1") and "/endpoints/" in done.tuned_model.endpoint
    stats = done.tuning_data_stats.supervised_tuning_data_stats
    # the statistics come from the rows in the bucket: 3 examples of "a" / "b" (1 token each), 2 epochs
    assert stats.tuning_dataset_example_count == 3 and stats.total_billable_token_count == 3 * 2 * 2
    assert stats.total_truncated_example_count == 0 and stats.truncated_example_indices is None
    # cancelling an ended job is refused, as on Vertex
    with pytest.raises(genai_errors.ClientError) as err:
        c.tunings.cancel(name=job.name)
    assert (err.value.code, err.value.status) == (400, "FAILED_PRECONDITION")
    # the SDK sends the filter verbatim as ?filter=; quoted and bare values both match
    assert [j.name for j in c.tunings.list(config={"filter": 'labels.sftflow-key="kone"'})] == [job.name]
    assert [j.name for j in c.tunings.list(config={"filter": "labels.sftflow-key=ktwo"})] == [other.name]
    assert list(c.tunings.list(config={"filter": "labels.sftflow-key=none"})) == []
    assert [j.name for j in c.tunings.list()] == [other.name, job.name]  # newest first
    assert server.count("GET", "filter=labels.sftflow-key") == 3
    with pytest.raises(genai_errors.ClientError):
        list(c.tunings.list(config={"filter": 'state="JOB_STATE_RUNNING"'}))


@pytest.mark.parametrize(("timeline", "outcome", "seen"), [
    # windows of 1 s: a poll on 2 busy cores can take a few hundred ms
    ((("QUEUED", 1.0), ("PENDING", 1.0), ("RUNNING", 1.0), ("UPDATING", 1.0)), "SUCCEEDED",
     ["QUEUED", "PENDING", "RUNNING", "UPDATING", "SUCCEEDED"]),
    ((("QUEUED", 1.0),), "EXPIRED", ["QUEUED", "EXPIRED"]),
    ((("RUNNING", 1.0),), "PARTIALLY_SUCCEEDED", ["RUNNING", "PARTIALLY_SUCCEEDED"]),
    ((("RUNNING", 1.0),), "PAUSED", ["RUNNING", "PAUSED"]),
])
def test_other_job_states_are_reachable_by_a_knob(make_vertex_server, datasets, timeline, outcome, seen):
    server = make_vertex_server(job_timeline=timeline, job_outcome=outcome)
    c = client(server)
    name = tune(c, datasets).name
    states = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not states or states[-1] != outcome):
        state = c.tunings.get(name=name).state.value.removeprefix("JOB_STATE_")
        if not states or states[-1] != state:
            states.append(state)
        time.sleep(0.02)
    assert states == seen
    last = c.tunings.get(name=name)
    # google-genai: a PAUSED or PARTIALLY_SUCCEEDED job has not "ended" (sftflow decides for itself)
    assert last.has_ended is (outcome not in ("PAUSED", "PARTIALLY_SUCCEEDED"))
    assert (last.tuned_model is not None) is (outcome == "SUCCEEDED")
    # set_job_state forces any state, e.g. a paused job resumed
    server.set_job_state(name, "RUNNING")
    assert c.tunings.get(name=name).state == types.JobState.JOB_STATE_RUNNING
    with pytest.raises(ValueError, match="state: expected one of"):
        server.set_job_state(name, "NOPE")


def test_list_pages(make_vertex_server, datasets):
    server = make_vertex_server()
    c = client(server)
    names = [tune(c, datasets, f"k{i}").name for i in range(5)]
    listed = [j.name for j in c.tunings.list(config={"page_size": 2})]
    assert listed == names[::-1]
    assert server.count("GET", "pageToken=") == 2


def test_failed_job(make_vertex_server, datasets):
    server = make_vertex_server(job_phases=(0.0, 0.0), job_outcome="FAILED")
    c = client(server)
    job = c.tunings.get(name=tune(c, datasets).name)
    assert job.state == types.JobState.JOB_STATE_FAILED
    assert job.error.message == "Dataset row 3: invalid role" and job.tuned_model is None


def _job_body(datasets, **hyper):
    return {"baseModel": "gemini-2.5-flash", "supervisedTuningSpec": {
        "trainingDatasetUri": datasets["train"], "validationDatasetUri": datasets["val"],
        "hyperParameters": {"epochCount": 1, "adapterSize": "ADAPTER_SIZE_FOUR", **hyper}}}


def test_tuning_job_requests_are_checked_like_vertex(vertex_server, datasets, gcs_bucket):
    def create(body):
        return http(vertex_server, "POST", f"/v1beta1/{PARENT}/tuningJobs", body)

    def refused(body, message):
        status, answer = create(body)
        assert (status, answer["error"]["status"]) == (400, "INVALID_ARGUMENT"), answer
        assert message in answer["error"]["message"], answer
        return answer["error"]

    spec = _job_body(datasets)["supervisedTuningSpec"]
    refused(_job_body(datasets, epochCount=-5), "epochCount value of -5 but the supported range is from 1 (inclusive)")
    refused(_job_body(datasets, epochCount="0"), "epochCount value of 0 but the supported range")
    refused(_job_body(datasets, epochCount=100000), "epochCount value of 100000 but the supported range is from 1 "
                                                    "(inclusive) to 101 (exclusive)")
    err = refused(_job_body(datasets, adapterSize="BOGUS"),
                  "Invalid value at 'supervised_tuning_spec.hyper_parameters.adapter_size' "
                  "(type.googleapis.com/google.cloud.aiplatform.v1beta1.SupervisedHyperParameters.AdapterSize), "
                  '"BOGUS"')
    assert err["details"][0]["fieldViolations"][0]["field"] == "supervised_tuning_spec.hyper_parameters.adapter_size"
    refused(_job_body(datasets, adapterSize="ADAPTER_SIZE_THIRTY_TWO"), "Adapter size 32 is not supported")
    refused(_job_body(datasets, learningRateMultiplier=0), "learning_rate_multiplier must be greater than 0")
    refused(_job_body(datasets, epochs=3), 'Unknown name "epochs" at \'supervised_tuning_spec.hyper_parameters\'')
    refused({**_job_body(datasets), "baseModel": "gemini-typo-9"}, "Base model gemini-typo-9 is not supported")
    refused({**_job_body(datasets), "baseModel": "gemini-2.0-flash"}, "is not supported for supervised tuning")
    refused({"supervisedTuningSpec": spec}, "base_model: required")
    missing = f"{gcs_bucket}/datasets/train/missing.jsonl"
    refused({**_job_body(datasets), "supervisedTuningSpec": {**spec, "trainingDatasetUri": missing}},
            f"training_dataset_uri {missing} does not exist")
    refused({**_job_body(datasets), "supervisedTuningSpec": {**spec, "validationDatasetUri": "gs://nobucket/v.jsonl"}},
            "validation_dataset_uri gs://nobucket/v.jsonl does not exist")
    refused({**_job_body(datasets), "supervisedTuningSpec": {**spec, "trainingDatasetUri": "gs://b/x.csv"}},
            "should be a GCS object of type JSONL")
    status, body = create({**_job_body(datasets), "labels": {"Key": "UPPER"}})
    assert status == 400 and "Label key 'Key' violates the format constraint" in body["error"]["message"]
    assert vertex_server.job_names == []  # nothing refused became a job
    # snake_case proto names are accepted (proto3 JSON), as Vertex accepts them
    status, body = create({"base_model": "gemini-2.5-flash", "supervised_tuning_spec": {
        "training_dataset_uri": datasets["train"], "hyper_parameters": {"epoch_count": "2"}}})
    assert status == 200 and body["state"] == "JOB_STATE_PENDING"


@pytest.mark.parametrize(("change", "message"), [
    ({"generationConfig": {"max_tokens": 5}},
     'Invalid JSON payload received. Unknown name "max_tokens" at \'generation_config\': Cannot find field.'),
    ({"generationConfig": {"maxOutputToken": 5}},
     'Invalid JSON payload received. Unknown name "maxOutputToken" at \'generation_config\': Cannot find field.'),
    ({"generation": {}}, 'Invalid JSON payload received. Unknown name "generation": Cannot find field.'),
    ({"safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "NOPE"}]},
     "Invalid value at 'safety_settings[0].threshold' "
     '(type.googleapis.com/google.cloud.aiplatform.v1beta1.SafetySetting.HarmBlockThreshold), "NOPE"'),
    ({"safetySettings": [{"category": "HARM_CATEGORY_RUDENESS", "threshold": "OFF"}]},
     "Invalid value at 'safety_settings[0].category' "
     '(type.googleapis.com/google.cloud.aiplatform.v1beta1.HarmCategory), "HARM_CATEGORY_RUDENESS"'),
    ({"generationConfig": {"temperature": "hot"}}, "Invalid value at 'generation_config.temperature' (TYPE_FLOAT)"),
    ({"generationConfig": {"temperature": 99}},
     "Unable to submit request because it has a temperature value of 99 but the supported range is from "
     "0 (inclusive) to 2.0001 (exclusive). Update the value and try again."),
    ({"generationConfig": {"temperature": -0.1}}, "has a temperature value of -0.1"),
    ({"generationConfig": {"maxOutputTokens": 0}},
     "has a maxOutputTokens value of 0 but the supported range is from 1 (inclusive) to 65537 (exclusive)"),
    ({"generationConfig": {"topP": 1.5}}, "has a topP value of 1.5 but the supported range is from 0 (exclusive)"),
    ({"generationConfig": {"candidateCount": 9}}, "has a candidateCount value of 9"),
    ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "Please use a valid role: user, model."),
    ({"contents": []}, "must include at least one contents field"),
    ({"contents": [{"role": "user", "parts": []}]}, "must include at least one parts field"),
])
def test_generate_requests_are_checked_like_vertex(vertex_server, change, message):
    endpoint = vertex_server.deploy_tuned_model()["endpoint"]
    for path in (f"/v1beta1/{PARENT}/publishers/google/models/gemini-2.5-flash:generateContent",
                 f"/v1beta1/{endpoint}:generateContent"):
        status, body = http(vertex_server, "POST", path, {**GEN, **change})
        assert (status, body["error"]["status"]) == (400, "INVALID_ARGUMENT"), body
        assert message in body["error"]["message"]


def test_field_names_and_enums_accepted_as_vertex_accepts_them(vertex_server):
    """The proto3 JSON parser takes the snake_case proto name as well as the lowerCamelCase one, and
    enum numbers as well as names: Vertex answers these (and honours them), so the server does too."""
    path = f"/v1beta1/{PARENT}/publishers/google/models/gemini-2.5-flash:generateContent"
    for config in ({"maxOutputTokens": 2}, {"max_output_tokens": 2}):
        status, body = http(vertex_server, "POST", path, {**GEN, "generationConfig": config})
        assert status == 200 and body["candidates"][0]["finishReason"] == "MAX_TOKENS"
        assert body["candidates"][0]["content"]["parts"][-1]["text"] == "a b"
    status, _ = http(vertex_server, "POST", path, {**GEN, "safety_settings": [{"category": 2, "threshold": 3}],
                                                   "generation_config": {"temperature": 2, "top_p": 1}})
    assert status == 200


def test_sdk_surfaces_invalid_argument(vertex_server):
    c = client(vertex_server)
    with pytest.raises(genai_errors.ClientError) as err:
        c.models.generate_content(model="gemini-2.5-flash", contents="hi",
                                  config=types.GenerateContentConfig(temperature=99))
    assert (err.value.code, err.value.status) == (400, "INVALID_ARGUMENT")
    assert "temperature value of 99" in err.value.message


def test_answer_level_safety_block_and_thought_parts(make_vertex_server):
    server = make_vertex_server()
    c = client(server)
    blocked = c.models.generate_content(model="gemini-2.5-flash", contents="x [[SAFETY]]")
    assert blocked.prompt_feedback is None  # the prompt passed; the answer was blocked
    (cand,) = blocked.candidates
    assert cand.finish_reason == types.FinishReason.SAFETY and cand.content is None and blocked.text is None
    assert [r.blocked for r in cand.safety_ratings] == [True, None]
    # gemini-2.5-flash thinks by default: thought tokens are counted, thought parts come only when asked
    plain = c.models.generate_content(model="gemini-2.5-flash", contents="a b c")
    assert [p.thought for p in plain.candidates[0].content.parts] == [None]
    assert plain.usage_metadata.thoughts_token_count > 0
    asked = c.models.generate_content(
        model="gemini-2.5-flash", contents="a b c",
        config=types.GenerateContentConfig(thinking_config=types.ThinkingConfig(include_thoughts=True)))
    parts = asked.candidates[0].content.parts
    assert [p.thought for p in parts] == [True, None] and parts[1].text == "a b c"
    assert asked.text == "a b c"  # the SDK's .text skips thought parts
    usage = asked.usage_metadata
    assert usage.total_token_count == (usage.prompt_token_count + usage.candidates_token_count
                                       + usage.thoughts_token_count)
    off = c.models.generate_content(
        model="gemini-2.5-flash", contents="a b c",
        config=types.GenerateContentConfig(thinking_config=types.ThinkingConfig(thinking_budget=0)))
    assert off.usage_metadata.thoughts_token_count is None
    lite = c.models.generate_content(model="gemini-2.5-flash-lite", contents="a b c")
    assert lite.usage_metadata.thoughts_token_count is None
    unasked = client(make_vertex_server(thoughts_unasked=True))
    parts = unasked.models.generate_content(model="gemini-2.5-flash", contents="a").candidates[0].content.parts
    assert [p.thought for p in parts] == [True, None]


def test_operations_are_not_done_at_once_and_are_polled(make_vertex_server):
    server = make_vertex_server(operation_delay_s=2.0)
    deployed = server.deploy_tuned_model()
    ep, did = deployed["endpoint"], deployed["deployed_model_id"]
    status, op = http(server, "POST", f"/v1/{ep}:undeployModel", {"deployedModelId": did})
    assert status == 200 and op["name"].startswith(f"{ep}/operations/") and not op.get("done")
    assert http(server, "GET", f"/v1/{op['name']}") == (200, {"name": op["name"]})
    # until the operation is done the model is still deployed, so the endpoint cannot be deleted
    assert http(server, "GET", f"/v1/{ep}")[1]["deployedModels"][0]["id"] == did
    status, body = http(server, "DELETE", f"/v1/{ep}")
    assert (status, body["error"]["status"]) == (400, "FAILED_PRECONDITION")
    done = wait_for(lambda: (o := http(server, "GET", f"/v1/{op['name']}")[1]).get("done") and o)
    assert done["response"]["@type"] == "type.googleapis.com/google.cloud.aiplatform.v1.UndeployModelResponse"
    assert http(server, "GET", f"/v1/{ep}")[1].get("deployedModels") == []
    assert http(server, "GET", f"/v1/{PARENT}/endpoints/1/operations/9")[0] == 404


def test_traffic_split_routes_requests_and_guards_undeploy(make_vertex_server):
    server = make_vertex_server(operation_delay_s=0.0)
    first = server.deploy_tuned_model("a")
    ep = first["endpoint"]
    second = server.deploy_tuned_model("b", endpoint=ep, traffic_split={first["deployed_model_id"]: 70, "0": 30})
    a, b = first["deployed_model_id"], second["deployed_model_id"]
    assert http(server, "GET", f"/v1/{ep}")[1]["trafficSplit"] == {a: 70, b: 30}
    for _ in range(200):
        assert http(server, "POST", f"/v1beta1/{ep}:generateContent", GEN)[0] == 200
    served = server.served_by()
    assert set(served) == {a, b} and 100 < served.count(a) < 180  # ~140 of 200 expected
    # a model that takes traffic is undeployed only if trafficSplit moves its traffic elsewhere
    status, body = http(server, "POST", f"/v1/{ep}:undeployModel", {"deployedModelId": a})
    assert (status, body["error"]["status"]) == (400, "FAILED_PRECONDITION") and "70%" in body["error"]["message"]
    status, body = http(server, "POST", f"/v1/{ep}:undeployModel", {"deployedModelId": a, "trafficSplit": {b: 90}})
    assert status == 400 and "add up to 100" in body["error"]["message"]
    status, body = http(server, "POST", f"/v1/{ep}:undeployModel", {"deployedModelId": a, "trafficSplit": {"9": 100}})
    assert status == 400 and "not deployed" in body["error"]["message"]
    assert http(server, "POST", f"/v1/{ep}:undeployModel", {"deployedModelId": a, "trafficSplit": {b: 100}})[0] == 200
    assert http(server, "GET", f"/v1/{ep}")[1]["trafficSplit"] == {b: 100}
    # the last model goes without a split, and leaves an endpoint that answers nothing
    assert http(server, "POST", f"/v1/{ep}:undeployModel", {"deployedModelId": b})[0] == 200
    assert http(server, "GET", f"/v1/{ep}")[1]["trafficSplit"] == {}
    status, body = http(server, "POST", f"/v1beta1/{ep}:generateContent", GEN)
    assert (status, body["error"]["status"]) == (400, "FAILED_PRECONDITION")
    # a deployed model without traffic can go at any time
    third = server.deploy_tuned_model("c")
    server.deploy_tuned_model("d", endpoint=third["endpoint"])
    assert http(server, "GET", f"/v1/{third['endpoint']}")[1]["trafficSplit"] == {third["deployed_model_id"]: 100}


def test_aiplatform_sdk_undeploy_and_delete(make_vertex_server, datasets):
    """The high-level aiplatform SDK (as the codelab's cleanup uses it) works against the server,
    two deployed models with a 60/40 split and operations that are not done at once included."""
    from google.cloud import aiplatform
    from google.cloud.aiplatform import initializer

    server = make_vertex_server(job_phases=(0.0, 0.0), operation_delay_s=0.3)
    c = client(server)  # a genai.Client closes its connection pool when garbage-collected
    job = c.tunings.get(name=tune(c, datasets).name)
    first_id = http(server, "GET", f"/v1/{job.tuned_model.endpoint}")[1]["deployedModels"][0]["id"]
    extra = server.deploy_tuned_model("extra", endpoint=job.tuned_model.endpoint,
                                      traffic_split={first_id: 60, "0": 40})
    try:
        aiplatform.init(project=server.project, location=server.location, api_endpoint=server.base_url,
                        api_transport="rest", credentials=google.oauth2.credentials.Credentials(token=TEST_TOKEN))
        endpoint = aiplatform.Endpoint(job.tuned_model.endpoint)
        assert len(endpoint.list_models()) == 2
        endpoint.delete(force=True)
        for ckpt in job.tuned_model.checkpoints[:-1]:  # a 2-epoch job: epoch 1's checkpoint has its own endpoint
            aiplatform.Endpoint(ckpt.endpoint).delete(force=True)
        aiplatform.Model(job.tuned_model.model).delete()
        aiplatform.Model(extra["model"]).delete()
    finally:
        initializer.global_config.__init__()  # aiplatform.init is process-global: undo it
    ep_path, model_path = "/v1/" + job.tuned_model.endpoint, "/v1/" + job.tuned_model.model.split("@")[0]
    assert server.count("POST", ep_path + ":undeployModel") == 2
    assert server.count("DELETE", ep_path) == 1 and server.count("DELETE", model_path) == 1
    assert server.count("GET", "/operations/") >= 4  # the SDK polled each operation until done
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
