"""The Vertex backend, driven through the real google-genai / aiplatform clients against the test server."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time

import pytest

from sftflow.infra import storage
from sftflow.backends import make_generator, make_tuner
from sftflow.backends.base import GenerationParams, JobState, TuningSpec
from sftflow.backends.vertex import VertexGenerator, VertexTuner
from sftflow.errors import BackendError, TransientError
from tests.servers.vertex_datasets import billable_tokens
from tests.servers.vertex_fixtures import TEST_TOKEN

PROMPT = "Provide a summary with about two sentences for the following article:\n\n" + (
    "Wash the sweater by hand. Use cold water and a mild soap. " + " ".join(f"w{i}" for i in range(30))
)
PARAMS = GenerationParams(temperature=0.2, max_output_tokens=256, safety_threshold="BLOCK_ONLY_HIGH", timeout_s=5)


@pytest.fixture
def spec(tuning_datasets):
    """`spec(key=..., **fields)` → a TuningSpec on datasets that exist in the GCS emulator."""

    def make(key="kabc", val_uri=tuning_datasets["val"], **kw) -> TuningSpec:
        kw.setdefault("train_uri", tuning_datasets["train"])
        return _spec(key, val_uri, **kw)

    return make


def _spec(key, val_uri, **kw) -> TuningSpec:
    values = dict(
        base_model="gemini-2.5-flash",
        val_uri=val_uri,
        epochs=3,
        adapter_size=8,
        learning_rate_multiplier=0.5,
        display_name="sftflow-summarizer",
        key=key,
    )
    values.update(kw)
    return TuningSpec(**values)


@pytest.fixture
def server(make_vertex_server):
    return make_vertex_server(job_phases=(0.3, 0.6), require_token=TEST_TOKEN)


# ------------------------------------------------------------------------------ generation


def test_generates_text_with_safety_settings_in_request(server, vertex_settings_for):
    gen = make_generator(vertex_settings_for(server), "gemini-2.5-flash")
    assert isinstance(gen, VertexGenerator) and gen.model == "gemini-2.5-flash"
    out = gen.generate(PROMPT, PARAMS)
    assert out.text.split() == PROMPT.split("article:")[1].split()[:20]
    assert out.finish_reason == "STOP" and not out.blocked
    assert out.prompt_tokens == len(PROMPT) // 4 and out.output_tokens > 0 and out.latency_s > 0
    (req,) = server.requests
    assert req["path"].endswith("/publishers/google/models/gemini-2.5-flash:generateContent")
    body = req["body"]
    assert body["generationConfig"] == {"temperature": 0.2, "maxOutputTokens": 256}
    assert {s["category"] for s in body["safetySettings"]} == {
        "HARM_CATEGORY_HARASSMENT", "HARM_CATEGORY_HATE_SPEECH",
        "HARM_CATEGORY_SEXUALLY_EXPLICIT", "HARM_CATEGORY_DANGEROUS_CONTENT",
    }
    assert {s["threshold"] for s in body["safetySettings"]} == {"BLOCK_ONLY_HIGH"}


def test_tuned_endpoint_uses_endpoint_path(server, vertex_settings_for):
    endpoint = server.deploy_tuned_model()["endpoint"]
    out = VertexGenerator(vertex_settings_for(server), endpoint).generate(PROMPT, PARAMS)
    assert out.text == "Wash the sweater by hand."
    assert server.count("POST", f"/v1beta1/{endpoint}:generateContent") == 1


def test_unknown_model_or_endpoint_is_a_permanent_error(server, vertex_settings_for):
    settings = vertex_settings_for(server)
    for model in ("gemini-typo-9", f"projects/{server.project}/locations/{server.location}/endpoints/777"):
        with pytest.raises(BackendError, match=r"HTTP 404 NOT_FOUND: .*not found") as err:
            VertexGenerator(settings, model).generate(PROMPT, PARAMS)
        assert model in str(err.value)


def test_thought_parts_are_not_the_answer(make_vertex_server, vertex_settings_for):
    """gemini-2.5-flash thinks; should thought parts come back, the generated text excludes them."""
    server = make_vertex_server(thoughts_unasked=True)
    out = VertexGenerator(vertex_settings_for(server), "gemini-2.5-flash").generate(PROMPT, PARAMS)
    assert "thinkingConfig" not in server.requests[0]["body"].get("generationConfig", {})
    assert out.text == " ".join(PROMPT.split("article:")[1].split()[:20])
    assert "Summarizing" not in out.text and out.finish_reason == "STOP"


def test_blocked_and_empty_answers_are_generations(server, vertex_settings_for):
    gen = VertexGenerator(vertex_settings_for(server), "gemini-2.5-flash")
    blocked = gen.generate("article: bad [[BLOCK]]", PARAMS)
    assert blocked.blocked and blocked.text == "" and blocked.finish_reason == "BLOCKED"
    # blocked while answering (finishReason SAFETY on the candidate), not at the prompt
    answer_blocked = gen.generate("article: bad [[SAFETY]]", PARAMS)
    assert answer_blocked.blocked and answer_blocked.text == "" and answer_blocked.finish_reason == "SAFETY"
    empty = gen.generate("article: [[EMPTY]]", PARAMS)
    assert not empty.blocked and empty.text == "" and empty.finish_reason == "EMPTY"
    capped = gen.generate(PROMPT, GenerationParams(max_output_tokens=3))
    assert capped.finish_reason == "MAX_TOKENS" and len(capped.text.split()) == 3


@pytest.mark.parametrize(("code", "kind"), [(429, TransientError), (503, TransientError), (500, TransientError),
                                            (408, TransientError), (400, BackendError), (404, BackendError)])
def test_http_errors_are_translated(make_vertex_server, vertex_settings_for, code, kind):
    server = make_vertex_server(fault_rate=1.0, fault_codes=(code,))
    with pytest.raises(kind) as err:
        VertexGenerator(vertex_settings_for(server), "gemini-2.5-flash").generate(PROMPT, PARAMS)
    assert f"HTTP {code}" in str(err.value) and "gemini-2.5-flash" in str(err.value)


def test_timeouts_and_refused_connections_are_transient(make_vertex_server, vertex_settings_for):
    slow = make_vertex_server(latency_s=1.0)
    gen = VertexGenerator(vertex_settings_for(slow), "gemini-2.5-flash")
    start = time.perf_counter()
    with pytest.raises(TransientError, match="Timeout"):
        gen.generate(PROMPT, GenerationParams(timeout_s=0.2))
    assert time.perf_counter() - start < 0.9
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = vertex_settings_for(slow, vertex_base_url=f"http://127.0.0.1:{port}")
    with pytest.raises(TransientError, match="ConnectError"):
        VertexGenerator(settings, "gemini-2.5-flash").generate(PROMPT, PARAMS)


def test_token_is_sent_but_never_logged_or_raised(spec, make_vertex_server, vertex_settings_for, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, SDKs and httpx included
    server = make_vertex_server(require_token=TEST_TOKEN, job_phases=(0.0, 0.0))
    settings = vertex_settings_for(server)
    gen = VertexGenerator(settings, "gemini-2.5-flash")
    assert gen.generate(PROMPT, PARAMS).text  # the server only answers the right token
    tuner = VertexTuner(settings)
    status = tuner.get(tuner.submit(spec()))
    tuner.delete_outputs(status, dry_run=False)
    errors = []
    server.set_faults(1.0, (400, 429, 503))
    for _ in range(3):
        for call in (lambda: gen.generate(PROMPT, PARAMS), lambda: tuner.get(status.name)):
            with pytest.raises((TransientError, BackendError)) as err:
                call()
            errors.append(err.value)
    wrong = vertex_settings_for(make_vertex_server(require_token="other"))
    with pytest.raises(BackendError, match="HTTP 401") as err:
        VertexGenerator(wrong, "gemini-2.5-flash").generate(PROMPT, PARAMS)
    errors.append(err.value)
    texts = [caplog.text, repr(settings), str(settings.public_dict())]
    for exc in errors:
        texts += [str(exc), repr(exc), str(exc.__cause__), repr(exc.__cause__)]
    assert len(caplog.records) > 0
    assert not [t for t in texts if TEST_TOKEN in t]


# ------------------------------------------------------------------------------ tuning


def test_submit_and_lifecycle(spec, make_vertex_server, vertex_settings_for, tuning_datasets):
    server = make_vertex_server(job_phases=(0.3, 2.0), require_token=TEST_TOKEN)  # a 2 s RUNNING window
    tuner = make_tuner(vertex_settings_for(server))
    assert isinstance(tuner, VertexTuner)
    tuning_spec = spec()
    name = tuner.submit(tuning_spec)
    body = server.requests[-1]["body"]
    assert body["baseModel"] == "gemini-2.5-flash"
    assert body["supervisedTuningSpec"] == {
        "trainingDatasetUri": tuning_spec.train_uri,
        "validationDatasetUri": tuning_spec.val_uri,
        "hyperParameters": {"epochCount": 3, "adapterSize": "ADAPTER_SIZE_EIGHT", "learningRateMultiplier": 0.5},
    }
    assert body["labels"] == {"sftflow-key": "kabc"} and body["tunedModelDisplayName"] == "sftflow-summarizer"
    seen = []
    deadline = time.monotonic() + 60
    while True:
        status = tuner.get(name)
        if not seen or seen[-1] != status.state:
            seen.append(status.state)
        if status.state.ended:
            break
        assert time.monotonic() < deadline, seen
        time.sleep(0.05)
    assert seen == [JobState.PENDING, JobState.RUNNING, JobState.SUCCEEDED]
    job_id = name.rsplit("/", 1)[1]
    assert status.key == "kabc" and status.progress == 1.0 and status.error is None
    assert status.tuned_model.endswith("@1") and "/endpoints/" in status.endpoint
    train = storage.read_bytes(tuning_datasets["train"])  # the statistics are the data's, not a constant
    assert status.stats["billable_tokens"] == billable_tokens(train, epochs=3) > 0
    assert status.stats["example_count"] == len(train.splitlines()) and status.stats["truncated_examples"] == 0
    assert status.total_steps == status.stats["step_count"] > 0
    assert status.console_url == (
        "https://console.cloud.google.com/vertex-ai/generative/language/locations/us-central1/"
        f"tuning/tuningJob/{job_id}?project=test-project"
    )
    assert status.create_time and status.metrics == {}


def test_submit_without_validation_and_bad_inputs(spec, server, vertex_settings_for):
    tuner = VertexTuner(vertex_settings_for(server))
    tuner.submit(spec(val_uri=None))
    assert "validationDatasetUri" not in server.requests[-1]["body"]["supervisedTuningSpec"]
    with pytest.raises(ValueError, match="label"):
        tuner.submit(spec(key="Not A Label"))
    with pytest.raises(ValueError, match="adapter_size"):
        tuner.submit(spec(adapter_size=3))
    with pytest.raises(BackendError, match="JSONL"):  # the service's own 400, translated
        tuner.submit(spec(train_uri="gs://b/train.csv"))
    missing = spec().train_uri.replace("train.jsonl", "gone.jsonl")
    with pytest.raises(BackendError, match=f"HTTP 400 INVALID_ARGUMENT: training_dataset_uri {missing} does not exist"):
        tuner.submit(spec(train_uri=missing))
    with pytest.raises(BackendError, match="HTTP 400 INVALID_ARGUMENT: Base model gemini-typo-9 is not supported"):
        tuner.submit(spec(base_model="gemini-typo-9"))
    assert server.count("POST", "tuningJobs") == 4 and len(server.job_names) == 1


def test_failed_job_carries_service_message(spec, make_vertex_server, vertex_settings_for):
    server = make_vertex_server(job_phases=(0.0, 0.0), job_outcome="FAILED")
    tuner = VertexTuner(vertex_settings_for(server))
    status = tuner.get(tuner.submit(spec()))
    assert status.state is JobState.FAILED and status.error == "Dataset row 3: invalid role"
    assert status.tuned_model is None and status.endpoint is None


def test_cancel(spec, make_vertex_server, vertex_settings_for):
    server = make_vertex_server(job_phases=(30.0, 30.0), cancel_delay_s=2.0)
    tuner = VertexTuner(vertex_settings_for(server))
    name = tuner.submit(spec())
    tuner.cancel(name)
    # JOB_STATE_CANCELLING first: neither alive (don't attach) nor ended (keep polling)
    first = tuner.get(name).state
    assert first is JobState.CANCELLING and not first.alive and not first.ended
    deadline = time.monotonic() + 30
    while tuner.get(name).state is JobState.CANCELLING and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tuner.get(name).state is JobState.CANCELLED
    assert server.count("POST", ":cancel") == 1
    with pytest.raises(BackendError, match="HTTP 400"):  # already ended
        tuner.cancel(name)


def test_find_by_label_newest_first(spec, server, vertex_settings_for):
    tuner = VertexTuner(vertex_settings_for(server))
    first = tuner.submit(spec(key="kone"))
    tuner.submit(spec(key="ktwo"))
    time.sleep(0.01)
    second = tuner.submit(spec(key="kone"))
    found = tuner.find("kone")
    assert [s.name for s in found] == [second, first] and {s.key for s in found} == {"kone"}
    assert tuner.find("kthree") == []
    assert server.count("GET", 'filter=labels.sftflow-key%3D%22kone%22') == 1


def test_transient_errors_while_tuning(spec, server, vertex_settings_for):
    tuner = VertexTuner(vertex_settings_for(server))
    name = tuner.submit(spec())
    server.set_faults(1.0, (503,))
    with pytest.raises(TransientError, match="HTTP 503"):
        tuner.get(name)
    with pytest.raises(TransientError):
        tuner.find("kabc")


def test_delete_outputs_dry_run_then_real(spec, make_vertex_server, vertex_settings_for):
    server = make_vertex_server(job_phases=(0.0, 0.0))
    tuner = VertexTuner(vertex_settings_for(server))
    status = tuner.get(tuner.submit(spec()))
    model = status.tuned_model.split("@")[0]
    checkpoints = [c["endpoint"] for c in status.checkpoints[:-1]]  # a 3-epoch job: epochs 1, 2 have their own
    assert len(checkpoints) == 2
    assert tuner.delete_outputs(status, dry_run=True) == [*checkpoints, status.endpoint, model]
    assert server.count("DELETE", "/") == 0 and server.count("POST", ":undeployModel") == 0
    assert tuner.delete_outputs(status, dry_run=False) == [*checkpoints, status.endpoint, model]
    assert server.count("POST", f"/v1/{status.endpoint}:undeployModel") == 1
    assert server.count("DELETE", f"/v1/{status.endpoint}") == 1 and server.count("DELETE", f"/v1/{model}") == 1
    assert tuner.delete_outputs(status, dry_run=False) == []  # already gone: nothing to do
    with pytest.raises(BackendError, match="HTTP 404"):
        VertexGenerator(vertex_settings_for(server), status.endpoint).generate(PROMPT, PARAMS)
    # the operations were not done at once: cleanup waited for each one by polling it
    assert server.count("GET", "/operations/") >= 3


def test_delete_outputs_of_an_endpoint_with_a_traffic_split(spec, make_vertex_server, vertex_settings_for):
    """Three deployed models, 50/30/20: each undeploy moves the traffic to the ones left, as Vertex requires."""
    server = make_vertex_server(job_phases=(0.0, 0.0), operation_delay_s=0.0)
    tuner = VertexTuner(vertex_settings_for(server))
    status = tuner.get(tuner.submit(spec(epochs=1)))  # one epoch: no checkpoint endpoints besides this one
    ep = status.endpoint
    job_did = next(iter(_endpoint(server, ep)["trafficSplit"]))
    b = server.deploy_tuned_model("b", endpoint=ep, traffic_split={job_did: 70, "0": 30})
    c = server.deploy_tuned_model("c", endpoint=ep, traffic_split={job_did: 50, b["deployed_model_id"]: 30, "0": 20})
    assert sum(_endpoint(server, ep)["trafficSplit"].values()) == 100 and c["deployed_model_id"]
    assert tuner.delete_outputs(status, dry_run=False) == [ep, status.tuned_model.split("@")[0]]
    undeploys = [r for r in server.requests if r["path"].endswith(":undeployModel")]
    assert [r["status"] for r in undeploys] == [200, 200, 200]
    assert sum(undeploys[0]["body"]["trafficSplit"].values()) == 100
    assert server.count("DELETE", f"/v1/{ep}") == 1


def _endpoint(server, name: str) -> dict:
    import json
    import urllib.request

    req = urllib.request.Request(f"{server.base_url}/v1/{name}", headers={"Authorization": f"Bearer {TEST_TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


_NO_CREDENTIALS_PROBE = """
import sys
from sftflow.backends.base import GenerationParams
from sftflow.backends.vertex import VertexGenerator
from sftflow.config import Settings
from sftflow.errors import BackendError

settings = Settings(_env_file=None, backend="vertex", project=sys.argv[1], region=sys.argv[2],
                    bucket="gs://test-bucket", vertex_base_url=sys.argv[3])
try:
    VertexGenerator(settings, "gemini-2.5-flash").generate("article: a. b.", GenerationParams())
except BackendError as exc:
    print(exc)
    sys.exit(3)
print("generated without credentials")
"""


def test_missing_credentials_is_a_clear_backend_error(server, tmp_path):
    """No token and no application-default credentials → one clear error, nothing sent.

    Hermetic, so it runs the same on a developer's machine after `gcloud auth application-default
    login` or on a Google Cloud runner: a fresh process whose HOME and gcloud config are empty
    directories, with no key file variable and the metadata-server check off (google-auth reads
    NO_GCE_CHECK at import, hence a subprocess rather than monkeypatch)."""
    home, gcloud = tmp_path / "home", tmp_path / "gcloud"
    home.mkdir(), gcloud.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GOOGLE_", "CLOUDSDK_", "GCE_", "SFTFLOW_"))}
    env.update(HOME=str(home), CLOUDSDK_CONFIG=str(gcloud), NO_GCE_CHECK="true",
               GCE_METADATA_HOST="127.0.0.1:9", GCE_METADATA_IP="127.0.0.1:9")
    proc = subprocess.run([sys.executable, "-c", _NO_CREDENTIALS_PROBE, server.project, server.location,
                           server.base_url], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout == ("no Google credentials found — run `gcloud auth "
                           "application-default login` or set SFTFLOW_VERTEX_ACCESS_TOKEN\n")
    assert server.requests == []
