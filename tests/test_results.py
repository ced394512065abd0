"""Results records and their JSONL files: what stats, plots and reports read back."""

from __future__ import annotations

import json
from types import SimpleNamespace

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


class CountingGenerator:
    """Our own Generator interface (not an SDK mock): answers with the prompt's first words, counts requests."""

    def __init__(self, model: str):
        self.model, self.requests = model, 0

    def generate(self, prompt, params):
        from sftflow.backends.base import Generation

        self.requests += 1
        text = " ".join(prompt.split()[:12])
        return Generation(text, "STOP", 0.0, prompt_tokens=len(prompt) // 4, output_tokens=len(text) // 4)


def test_a_results_format_change_recomputes_the_evaluation_instead_of_serving_it(tmp_path, monkeypatch):
    """The results format is in the evaluation's identity: the evaluate task's cache key and the checkpoint's
    name. Bumping RESULTS_VERSION (or changing ExampleResult's fields) asks every example again."""
    from sftflow.config import Settings
    from sftflow.data.samples import sample_paths
    from sftflow.evaluation import results, step
    from tasks.evaluation import evaluate_model

    gens: list[CountingGenerator] = []
    monkeypatch.setattr(step, "make_generator", lambda spec, model: gens.append(CountingGenerator(model)) or gens[-1])
    s = Settings(_env_file=None, local_root=str(tmp_path), samples=3)
    spec, test = step.EvalSpec.from_settings(s), sample_paths()["test"]
    params = {"spec": spec, "model": "m", "test_path": test, "label": "base"}
    # The task sits on an instance attribute: as a class attribute, Prefect's Task.__get__ would bind
    # the context object as `self` onto evaluate_model's shared function for the rest of the session.
    task_key = lambda: evaluate_model.cache_key_fn(SimpleNamespace(task=evaluate_model), params)  # noqa: E731

    def requests() -> int:
        before = sum(g.requests for g in gens)
        ev = step.evaluate_and_save(spec, "m", test, "base")
        assert len(results.read_results(ev.results_uri)) == 3
        return sum(g.requests for g in gens) - before

    key_v1 = task_key()
    assert requests() == 3
    assert requests() == 0  # same format: the checkpoint serves every example

    monkeypatch.setattr(results, "RESULTS_VERSION", results.RESULTS_VERSION + 1)
    assert requests() == 3  # the old checkpoint is not served: every example is asked again
    assert task_key() != key_v1  # nor is Prefect's cache entry of the old format
    assert requests() == 0
    # A field added or removed changes the format without a hand bump.
    assert spec.identity()["results_format"] == results.results_format()
    assert results.results_format()["fields"] == list(results.ExampleResult.__dataclass_fields__)
