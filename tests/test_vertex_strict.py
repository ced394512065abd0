"""The Vertex-shaped server speaks Google's published API description (tests/servers/discovery.py) and refuses what
the description cannot say (tests/servers/vertex_schema.py), each leniency of issue 21 with its test."""

from __future__ import annotations

import json
import time

import pytest

from sftflow.infra import storage
from sftflow.tuning.hyperparameters import Hyperparameters
from tests.servers.vertex_datasets import billable_tokens
from tests.servers.vertex_fixtures import TUNING_LINE, upload_datasets
from tests.servers.vertex_server import TEST_TOKEN, VertexTestServer
from tests.test_vertex_server import PARENT, http

GEN = {"contents": [{"role": "user", "parts": [{"text": "a b c"}]}]}


def _gen(server, body, model="gemini-2.5-flash"):
    return http(server, "POST", f"/v1beta1/{PARENT}/publishers/google/models/{model}:generateContent", body)


def _job(datasets, **fields):
    body = {"baseModel": "gemini-2.5-flash", "supervisedTuningSpec": {
        "trainingDatasetUri": datasets["train"],
        "hyperParameters": {"epochCount": 1, "adapterSize": "ADAPTER_SIZE_FOUR"}}}
    hyper = fields.pop("hyper", {})
    body["supervisedTuningSpec"]["hyperParameters"].update(hyper)
    return {**body, **fields}


def _refused(status_body, *needles):
    status, body = status_body
    assert (status, body["error"]["status"]) == (400, "INVALID_ARGUMENT"), body
    for needle in needles:
        assert needle in body["error"]["message"], body
    return body["error"]


def test_names_types_and_enums_as_the_document_says(vertex_server):
    _refused(_gen(vertex_server, {**GEN, "generationConfig": {"x": 1}}),
             'Invalid JSON payload received. Unknown name "x" at \'generation_config\': Cannot find field.')
    _refused(_gen(vertex_server, {**GEN, "generationConfig": {"thinkingConfig": {"budget": 1}}}),
             'Unknown name "budget" at \'generation_config.thinking_config\': Cannot find field.')
    _refused(_gen(vertex_server, {**GEN, "bogus": True}), 'Unknown name "bogus": Cannot find field.')
    _refused(_gen(vertex_server, {**GEN, "generationConfig": {"temperature": "hot"}}),
             "Invalid value at 'generation_config.temperature' (TYPE_FLOAT), \"hot\"")
    _refused(_gen(vertex_server, {**GEN, "generationConfig": {"candidateCount": 1.5}}),
             "Invalid value at 'generation_config.candidate_count' (TYPE_INT32), 1.5")
    _refused(_gen(vertex_server, {**GEN, "generationConfig": {"responseLogprobs": "yes"}}), "(TYPE_BOOL)")
    _refused(_gen(vertex_server, {"contents": "hi"}), "Invalid value at 'contents[0]'")
    _refused(_gen(vertex_server, {**GEN, "safetySettings": [{"category": "HARM_CATEGORY_HATE_SPEECH",
                                                              "threshold": 99}]}),
             "Invalid value at 'safety_settings[0].threshold'")
    # snake_case proto names and lowerCamelCase JSON names alike; int64 as a number or a string
    assert _gen(vertex_server, {**GEN, "generation_config": {"max_output_tokens": "2", "seed": 3}})[0] == 200


def test_answers_are_lower_camel_case_and_int64_strings(vertex_server, tuning_datasets):
    status, job = http(vertex_server, "POST", f"/v1beta1/{PARENT}/tuningJobs", {
        "base_model": "gemini-2.5-flash", "tuned_model_display_name": "snake",
        "supervised_tuning_spec": {"training_dataset_uri": tuning_datasets["train"],
                                   "hyper_parameters": {"epoch_count": 2, "adapter_size": 2}}})
    assert status == 200, job
    assert job["supervisedTuningSpec"] == {"trainingDatasetUri": tuning_datasets["train"], "hyperParameters": {
        "epochCount": "2", "adapterSize": "ADAPTER_SIZE_FOUR"}}  # the proto's number 2 is FOUR
    assert job["tunedModelDisplayName"] == "snake" and "tuned_model_display_name" not in job


def test_numeric_adapter_sizes_follow_the_proto_numbering(vertex_server, tuning_datasets):
    """AdapterSize numbers as google.cloud.aiplatform_v1beta1.types.tuning_job numbers them (TWO=6, THIRTY_TWO=5),
    not their order in the document's enum list."""
    from google.cloud.aiplatform_v1beta1.types import tuning_job

    sizes = tuning_job.SupervisedHyperParameters.AdapterSize
    assert (sizes.ADAPTER_SIZE_TWO, sizes.ADAPTER_SIZE_THIRTY_TWO, sizes.ADAPTER_SIZE_SIXTEEN) == (6, 5, 4)

    def create(size, model="gemini-2.5-flash"):
        return http(vertex_server, "POST", f"/v1beta1/{PARENT}/tuningJobs",
                    _job(tuning_datasets, baseModel=model, hyper={"adapterSize": size}))

    status, job = create(6)
    assert status == 200 and job["supervisedTuningSpec"]["hyperParameters"]["adapterSize"] == "ADAPTER_SIZE_TWO"
    _refused(create(5), "Adapter size 32 is not supported for gemini-2.5-flash")
    assert create(4)[0] == 200  # SIXTEEN on 2.5 Flash
    _refused(create(4, "gemini-2.5-pro"), "Adapter size 16 is not supported for gemini-2.5-pro")
    _refused(create(7), "Invalid value at 'supervised_tuning_spec.hyper_parameters.adapter_size'")


def test_what_the_document_cannot_say_is_refused(vertex_server, tuning_datasets):
    def create(body):
        return http(vertex_server, "POST", f"/v1beta1/{PARENT}/tuningJobs", body)

    _refused(create(_job(tuning_datasets, hyper={"learningRate": 0.001})),
             "learning_rate is not supported for gemini-2.5-flash")
    _refused(create(_job(tuning_datasets, hyper={"batchSize": 8})), "batch_size is not supported")
    _refused(create(_job(tuning_datasets, hyper={"epochCount": 100000})), "epochCount value of 100000")
    _refused(create(_job(tuning_datasets, tunedModelDisplayName="x" * 129)),
             "tuned_model_display_name is 129 characters long; the limit is 128")
    assert create(_job(tuning_datasets, tunedModelDisplayName="x" * 128))[0] == 200
    for labels in ({"NOT A LABEL/α": "x"}, {"ok": "UPPER"}, {"k": "x" * 64}, {"1key": "v"},
                   {f"k{i}": "v" for i in range(65)}):
        _refused(create(_job(tuning_datasets, labels=labels)), "abel")
    assert create(_job(tuning_datasets, labels={"clé": "données", "k_1-x": ""}))[0] == 200  # international lowercase
    assert vertex_server.count("POST", "tuningJobs") == 11


@pytest.mark.parametrize(("model", "config", "needle"), [
    ("gemini-2.0-flash", {"maxOutputTokens": 60000}, "maxOutputTokens value of 60000 but the supported range is from "
                                                     "1 (inclusive) to 8193 (exclusive)"),
    ("gemini-2.5-pro", {"thinkingConfig": {"thinkingBudget": 0}}, "thinkingBudget value of 0 but the supported range "
                                                                   "is from 128 (inclusive) to 32769 (exclusive)"),
    ("gemini-2.5-flash", {"thinkingConfig": {"thinkingBudget": 999999}}, "thinkingBudget value of 999999"),
    ("gemini-2.5-flash-lite", {"thinkingConfig": {"thinkingBudget": 100}}, "from 512 (inclusive)"),
    ("gemini-2.0-flash", {"thinkingConfig": {"thinkingBudget": 0}}, "Thinking is not supported by gemini-2.0-flash"),
])
def test_generation_limits_per_model(vertex_server, model, config, needle):
    _refused(_gen(vertex_server, {**GEN, "generationConfig": config}, model), needle)


def test_generation_limits_allow_what_each_model_allows(vertex_server):
    for model, config in (("gemini-2.5-flash", {"maxOutputTokens": 60000}),
                          ("gemini-2.5-flash", {"thinkingConfig": {"thinkingBudget": 0}}),
                          ("gemini-2.5-flash-lite", {"thinkingConfig": {"thinkingBudget": 0}}),
                          ("gemini-2.5-pro", {"thinkingConfig": {"thinkingBudget": -1}}),
                          ("gemini-2.5-pro", {"thinkingConfig": {"thinkingBudget": 128}}),
                          ("gemini-2.0-flash", {"maxOutputTokens": 8192})):
        assert _gen(vertex_server, {**GEN, "generationConfig": config}, model)[0] == 200, (model, config)


def test_a_model_patch_needs_its_update_mask(make_vertex_server, tuning_datasets):
    server = make_vertex_server(job_phases=(0.0, 0.0))
    status, job = http(server, "POST", f"/v1beta1/{PARENT}/tuningJobs", _job(tuning_datasets, hyper={"epochCount": 2}))
    done = None
    deadline = time.monotonic() + 30
    while done is None or "tunedModel" not in done:
        assert time.monotonic() < deadline
        done = http(server, "GET", f"/v1beta1/{job['name']}")[1]
    model = done["tunedModel"]["model"]
    _refused(http(server, "PATCH", f"/v1beta1/{model}", {"defaultCheckpointId": "1"}), "update_mask: required")
    status, answer = http(server, "PATCH", f"/v1beta1/{model}?updateMask=defaultCheckpointId",
                          {"defaultCheckpointId": "1"})
    assert status == 200 and answer["defaultCheckpointId"] == "1"
    # a field outside the mask is not updated, as the mask says
    status, answer = http(server, "PATCH", f"/v1beta1/{model}?updateMask=displayName",
                          {"displayName": "renamed", "defaultCheckpointId": "2"})
    assert status == 200 and (answer["displayName"], answer["defaultCheckpointId"]) == ("renamed", "1")


BAD_FILES = [
    (b"\n", "has no examples"),
    (b'{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}\n',
     'row 1: Unknown name "messages"'),
    (TUNING_LINE + b'{"contents":[{"role":"user","parts":[{"text":"a"}]}]}\n',
     "row 2: contents[0].role: the last turn must be 'model'"),
    (TUNING_LINE + TUNING_LINE.replace(b'"model"', b'"assistant"'),
     "row 2: contents[1].role must be 'user' or 'model', got \"assistant\""),
    (b'{"contents":[{"role":"user","parts":[{"text":"a"}]},{"role":"user","parts":[{"text":"b"}]},'
     b'{"role":"model","parts":[{"text":"c"}]}]}\n', "row 1: contents[1].role: turns must alternate"),
    (b'{"contents":[{"role":"model","parts":[{"text":"a"}]}]}\n', "row 1: contents[0].role: the first turn"),
    (b'{"systemInstruction":"be brief",' + TUNING_LINE[1:], "row 1: systemInstruction:"),
    (b'{"contents":[{"role":"user","parts":[]},{"role":"model","parts":[{"text":"b"}]}]}\n',
     "row 1: contents[0].parts must hold at least one part"),
    (TUNING_LINE + b"{not json\n", "row 2: invalid JSON"),
]


@pytest.mark.parametrize(("data", "needle"), BAD_FILES)
def test_a_bad_training_file_fails_the_job_naming_the_row(make_vertex_server, gcs_bucket, data, needle):
    server = make_vertex_server(job_phases=(0.1, 0.1))
    _, train, _ = upload_datasets(gcs_bucket)
    storage.write_bytes(train, data)
    status, job = http(server, "POST", f"/v1beta1/{PARENT}/tuningJobs", _job({"train": train}))
    assert status == 200 and job["state"] == "JOB_STATE_PENDING"  # Vertex accepts the job, then checks the rows
    deadline = time.monotonic() + 30
    while job["state"] != "JOB_STATE_FAILED":
        assert time.monotonic() < deadline and job["state"] == "JOB_STATE_PENDING", job
        job = http(server, "GET", f"/v1beta1/{job['name']}")[1]
    assert needle in job["error"]["message"] and train in job["error"]["message"]
    assert "tuningDataStats" not in job and "tunedModel" not in job


def test_statistics_come_from_the_rows_truncation_included(make_vertex_server, gcs_bucket):
    server = make_vertex_server(job_phases=(0.0, 0.0), max_example_tokens=6)
    _, train, _ = upload_datasets(gcs_bucket)
    long = json.dumps({"contents": [{"role": "user", "parts": [{"text": "one two three four five"}]},
                                    {"role": "model", "parts": [{"text": "six seven"}]}]}).encode() + b"\n"
    data = TUNING_LINE + long + TUNING_LINE + long
    storage.write_bytes(train, data)
    status, job = http(server, "POST", f"/v1beta1/{PARENT}/tuningJobs", _job({"train": train}, hyper={"epochCount": 3}))
    assert status == 200
    deadline = time.monotonic() + 30
    while "tuningDataStats" not in job:
        assert time.monotonic() < deadline
        job = http(server, "GET", f"/v1beta1/{job['name']}")[1]
    stats = job["tuningDataStats"]["supervisedTuningDataStats"]
    assert stats["tuningDatasetExampleCount"] == "4" and stats["totalTruncatedExampleCount"] == "2"
    assert stats["truncatedExampleIndices"] == ["2", "4"] and len(stats["droppedExampleReasons"]) == 2
    assert stats["totalBillableTokenCount"] == str(3 * (2 + 6 + 2 + 6)) != str(billable_tokens(data, 3))


def test_a_bad_answer_or_a_server_bug_is_recorded_to_fail_the_test(gcs_emulator_server):
    """The fixture fails the test at teardown on `server.failures`; here the server is made by hand to look at them."""
    with VertexTestServer(gcs_url=gcs_emulator_server) as server:
        server.extra_routes.append(("aiplatform.projects.locations.tuningJobs.get",
                                    lambda parent, num, **_: {"name": "x", "tuned_model_display_name": "snake"}))
        assert http(server, "GET", f"/v1beta1/{PARENT}/tuningJobs/1")[0] == 200
        assert len(server.failures) == 1 and 'Unknown name "tuned_model_display_name"' in server.failures[0]
        server.extra_routes.append(("aiplatform.projects.locations.tuningJobs.list",
                                    lambda parent, **_: 1 / 0))
        status, body = http(server, "GET", f"/v1beta1/{PARENT}/tuningJobs")
        assert status == 500 and "ZeroDivisionError" in server.failures[1]


def test_a_wrong_or_empty_token_is_one_line_from_sftflow_without_retries(make_vertex_server, vertex_settings_for,
                                                                         tuning_datasets):
    from sftflow.backends import make_generator, make_tuner
    from sftflow.backends.base import GenerationParams, TuningSpec
    from sftflow.errors import BackendError

    server = make_vertex_server()
    spec = TuningSpec(base_model="gemini-2.5-flash", train_uri=tuning_datasets["train"], val_uri=None,
                      hyperparameters=Hyperparameters(epochs=1, adapter_size=4, learning_rate_multiplier=1.0),
                      display_name="t", key="kwrong")
    settings = vertex_settings_for(server, vertex_access_token=" ")
    with pytest.raises(BackendError, match="blank or holds whitespace"):  # refused before a request is sent
        make_tuner(settings).submit(spec)
    assert server.requests == []
    for token in ("wrong-token", "also-wrong"):
        settings = vertex_settings_for(server, vertex_access_token=token)
        before = len(server.requests)
        with pytest.raises(BackendError) as err:
            make_tuner(settings).submit(spec)
        message = str(err.value)
        assert "401" in message and "UNAUTHENTICATED" in message and "\n" not in message
        assert TEST_TOKEN not in message and "wrong-token" not in message
        with pytest.raises(BackendError, match="401"):
            make_generator(settings, "gemini-2.5-flash").generate("hi", GenerationParams())
        assert len(server.requests) - before == 2  # one request each: no retry storm


def test_the_data_warning_line_names_what_vertex_did_not_train_on():
    from sftflow.backends.base import JobState, JobStatus
    from sftflow.tuning.report import data_warning, job_markdown

    assert data_warning({"example_count": 100, "truncated_examples": 0}) is None
    line = data_warning({"example_count": 1200, "truncated_examples": 12, "truncated_indices": list(range(1, 13)),
                         "dropped_reasons": ["example 1 is too long"]})
    assert line == ("warning: Vertex truncated or dropped 12 of 1,200 training examples (examples 1, 2, 3, 4, 5, 6, "
                    "7, 8, 9, 10, ...): example 1 is too long; they were not trained on as written")
    status = JobStatus(name="j", state=JobState.SUCCEEDED, stats={"truncated_examples": 1, "truncated_indices": [3]})
    assert job_markdown(status, 1.0).splitlines()[:3] == [
        "# Tuning job `j`", "", "**warning: Vertex truncated or dropped 1 training examples (examples 3); they were "
                                "not trained on as written**"]


def test_the_uploaded_training_file_is_what_the_job_trains_on(make_vertex_server, vertex_settings_for, gcs_bucket,
                                                               tmp_path):
    """The prepare step's upload (sftflow.data.prepare.upload_dataset) then a job on it: Vertex counts the rows
    sftflow validated, and bills their tokens."""
    from sftflow.backends import make_tuner
    from sftflow.backends.base import JobState, TuningSpec
    from sftflow.data.prepare import upload_dataset

    server = make_vertex_server(job_phases=(0.1, 0.1))
    local = tmp_path / "train.jsonl"
    local.write_bytes(b"".join(json.dumps({"contents": [
        {"role": "user", "parts": [{"text": f"article {i}: words and more words."}]},
        {"role": "model", "parts": [{"text": f"summary {i}."}]}]}).encode() + b"\n" for i in range(5)))
    uploaded = upload_dataset(str(local), f"{gcs_bucket}/runs/r", "train")
    tuner = make_tuner(vertex_settings_for(server))
    name = tuner.submit(TuningSpec(base_model="gemini-2.5-flash", train_uri=uploaded.uri, val_uri=None,
                                   hyperparameters=Hyperparameters(epochs=2, adapter_size=4, learning_rate_multiplier=1.0),
                                   display_name="t", key="kupload"))
    deadline = time.monotonic() + 60
    while not (status := tuner.get(name)).state.ended:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert status.state is JobState.SUCCEEDED, status.error
    assert status.stats["example_count"] == 5 and status.stats["billable_tokens"] == billable_tokens(
        local.read_bytes(), epochs=2)
