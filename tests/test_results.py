"""Results records and their JSONL files: what stats, plots and reports read back."""

from __future__ import annotations

import json

import pytest

from sftflow.infra import storage
from sftflow.errors import CheckpointError
from sftflow.evaluation.results import ExampleResult, results_from_jsonl, results_to_jsonl

FIELDS = {"id", "model", "prompt_chars", "reference", "output", "finish_reason", "blocked",
          "error", "error_kind", "scores", "latency_s", "prompt_tokens", "output_tokens", "attempts"}


def records() -> list[ExampleResult]:
    return [
        ExampleResult(id="a", model="m", prompt_chars=12, reference="ref ü", output="out",
                      finish_reason="STOP", scores={"rouge1": 0.5, "rouge2": 0.25, "rougeL": 0.5},
                      latency_s=0.2, prompt_tokens=3, output_tokens=1, attempts=1),
        ExampleResult(id="b", model="m", prompt_chars=9, reference="r", finish_reason="SAFETY", blocked=True,
                      scores={"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}, attempts=1),
        ExampleResult(id="c", model="m", prompt_chars=9, reference="r", error="429 RESOURCE_EXHAUSTED: quota",
                      error_kind="429 RESOURCE_EXHAUSTED", attempts=5),
    ]


def test_results_round_trip_through_storage(tmp_path):
    out = storage.write_text(str(tmp_path / "sub" / "results.jsonl"), results_to_jsonl(records()))
    back = results_from_jsonl(storage.read_text(out), out)
    assert [r.to_dict() for r in back] == [r.to_dict() for r in records()]
    assert [(r.scored, r.blocked) for r in back] == [(True, False), (True, True), (False, False)]
    rec = json.loads(storage.read_text(out).splitlines()[0])
    assert set(rec) == FIELDS
    assert "ref ü" in storage.read_text(out)  # UTF-8, not \\u escapes


def test_last_record_for_an_id_wins_and_a_cut_last_line_is_ignored():
    a, b, _ = records()
    newer = ExampleResult(**{**a.to_dict(), "output": "newer"})
    text = results_to_jsonl([a, b, newer]) + results_to_jsonl([b])[:20]  # a kill mid-write
    back = results_from_jsonl(text, "r.jsonl")
    assert [(r.id, r.output) for r in back] == [("a", "newer"), ("b", "")]


def test_a_bad_line_in_the_middle_names_source_and_line():
    a, b, _ = records()
    text = results_to_jsonl([a]) + '{"id": "x"}\n' + results_to_jsonl([b])
    with pytest.raises(CheckpointError, match=r"^r\.jsonl:2: not a result record: missing field\(s\): model, reference"):
        results_from_jsonl(text, "r.jsonl")
