"""Records between steps: JSON round trips, lookups by kind, and a clear error for a stored record
that this version does not write (an older file, or one edited by hand)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from sftflow.backends.base import JobState, JobStatus
from sftflow.records import (
    ComparisonOutcome,
    Evaluation,
    FileSummary,
    PreparedData,
    RecordError,
    RunReport,
    TunedModel,
    TuningRecord,
    job_status_from_json,
    job_status_to_json,
)

SUMMARIES = (
    FileSummary(kind="test", examples=3, source="t.csv"),  # first on purpose: looked up by kind
    FileSummary(kind="train", examples=10, estimated_tokens=500, max_example_tokens=80, source="train.jsonl",
                problems=({"path": "train.jsonl", "line": 2, "field": "contents", "message": "empty"},),
                problem_count=1),
    FileSummary(kind="val", examples=4, estimated_tokens=200, max_example_tokens=60, source="val.jsonl"),
)
PREPARED = PreparedData(train="gs://b/datasets/train/train-1.jsonl", val="gs://b/datasets/val/val-2.jsonl",
                        test="gs://b/datasets/test/test-3.csv", summaries=SUMMARIES, cost_usd=0.02,
                        uploaded=("gs://b/datasets/train/train-1.jsonl",))
STATUS = JobStatus(name="projects/p/locations/us-central1/tuningJobs/1", state=JobState.SUCCEEDED, key="k" * 21,
                   progress=1.0, step=10, total_steps=10, tuned_model="projects/p/locations/l/models/m@1",
                   endpoint="projects/p/locations/l/endpoints/e", create_time="2026-01-01T00:00:00Z",
                   update_time="2026-01-01T00:10:00Z", stats={"billable_tokens": 100},
                   metrics={"train_loss": [(1, 2.5), (2, 1.5)]})
RECORDS = [
    PREPARED,
    TunedModel(job=STATUS.name, key="k" * 21, tuned_model=STATUS.tuned_model, endpoint=STATUS.endpoint,
               stats={"billable_tokens": 100}, create_time=STATUS.create_time, update_time=STATUS.update_time,
               cost_estimate={"total_usd": 0.5, "method": "characters / 4"}),
    TuningRecord.of(STATUS, {"base_model": "gemini-2.5-flash", "epochs": 1}, "default"),
    Evaluation(label="base", model="gemini-2.5-flash", results_uri="r.jsonl", report_uri="r.md", plot_uri="d.png",
               summary={"rougeL": {"mean": 0.3, "median": 0.25, "std": 0.1, "n": 5}},
               counts={"total": 5, "scored": 5, "errors": 0, "blocked": 0, "empty": 0}, errors=("1 x: timeout",)),
    ComparisonOutcome(comparison_uri="c.json", report_uri="c.md", plots={"means": "m.png"},
                      comparison={"n_paired": 5, "metrics": {}}, verdict=("tuned beats base",)),
    RunReport(report_uri="report.md", report_json_uri="report.json", verdict=("v",), comparison={"n_paired": 5},
              errors={"base": ("1 x: timeout",)}),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_record_round_trips_through_json_and_storage(record, tmp_path):
    data = json.loads(json.dumps(record.to_json()))
    assert type(record).from_json(data) == record
    uri = record.write(str(tmp_path / "r.json"))
    assert type(record).read(uri) == record
    with pytest.raises(ValidationError):  # frozen: what a step hands on cannot be changed on the way
        record.__setattr__(next(iter(type(record).model_fields)), "x")


def test_prepared_data_looks_files_up_by_kind_not_position():
    assert PREPARED.summary("train").estimated_tokens == 500
    assert PREPARED.summary("test").examples == 3
    assert PREPARED.uri("val").endswith("val-2.jsonl")
    with pytest.raises(KeyError):
        PREPARED.summary("holdout")


def test_prepared_json_keeps_the_keys_it_always_had():
    assert list(PREPARED.to_json()) == ["train", "val", "test", "summaries", "cost_usd", "uploaded"]
    assert set(PREPARED.to_json()["summaries"][1]) == {"kind", "examples", "estimated_tokens", "max_example_tokens",
                                                       "source", "problems", "problem_count"}


def test_job_status_round_trips_and_tuning_record_gives_it_back():
    assert job_status_from_json(json.loads(json.dumps(job_status_to_json(STATUS)))) == STATUS
    record = TuningRecord.from_json(json.loads(json.dumps(TuningRecord.of(STATUS, {}, "default").to_json())))
    assert record.status() == STATUS and record.run_name == "default"


@pytest.mark.parametrize("edit, field", [
    (lambda d: d.pop("test"), "test"),
    (lambda d: d.update(cost_usd="cheap"), "cost_usd"),
    (lambda d: d["summaries"][0].pop("examples"), "summaries.0.examples"),
])
def test_an_older_or_edited_record_is_an_error_naming_the_file_and_field(tmp_path, edit, field):
    data = PREPARED.to_json()
    edit(data)
    path = tmp_path / "runs" / "default" / "prepared.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError) as err:
        PreparedData.read(str(path))
    message = str(err.value)
    assert message.startswith(f"{path}: not a PreparedData record ({field}: ")
    assert "\n" not in message


def test_a_record_that_is_not_json_or_has_a_bad_job_state_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "tuned.json"
    path.write_text('{"job": "j", "key": ')
    with pytest.raises(RecordError, match=f"^{path}: not JSON"):
        TunedModel.read(str(path))
    bad = dict(job_status_to_json(STATUS), state="HALF_DONE")
    path.write_text(json.dumps(bad))
    with pytest.raises(RecordError, match=f"^{path}: not a TuningRecord record \\(state: "):
        TuningRecord.read(str(path))
    assert TunedModel.read_if_exists(str(tmp_path / "absent.json")) is None
