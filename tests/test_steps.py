"""Steps called directly (no Prefect): compare_and_save and write_run_report save what they say and
return records that agree with the files."""

from __future__ import annotations

import json

import numpy as np

from sftflow.infra import storage
from sftflow.evaluation.results import ExampleResult, results_to_jsonl
from sftflow.records import ComparisonOutcome, Evaluation, FileSummary, PreparedData, TunedModel
from sftflow.evaluation.rouge import METRICS
from sftflow.evaluation.stats import counts, summarize
from sftflow.evaluation.compare import COMPARE_OUTPUTS, compare_and_save
from sftflow.reporting.step import write_run_report

REPORT_KEYS = {"run_name", "backend", "units", "headline", "data", "job", "evaluations", "comparison", "comparison_uri",
               "comparison_report_uri", "example_pairs", "plots", "verdict"}


def _results(model: str, scores) -> list[ExampleResult]:
    return [ExampleResult(id=f"e{i}", model=model, prompt_chars=10, reference="ref", output="out",
                          finish_reason="STOP", scores={m: float(s) for m in METRICS}, attempts=1)
            for i, s in enumerate(scores)]


def _evaluation(label: str, results, uri: str) -> Evaluation:
    return Evaluation(label=label, model=results[0].model, results_uri=uri, report_uri=f"{label}.md",
                      plot_uri=f"{label}.png", summary=summarize(results), counts=counts(results),
                      errors=("1/30 examples: timeout",) if label == "tuned" else ())


def test_compare_then_report_write_the_files_their_records_name(tmp_path):
    rng = np.random.default_rng(0)
    b = rng.uniform(0.1, 0.5, 30)
    base, tuned = _results("base-model", b), _results("tuned-endpoint", np.clip(b + 0.1, 0, 1))
    run = str(tmp_path / "runs" / "default")
    uris = {}
    for label, results in (("base", base), ("tuned", tuned)):
        uris[label] = storage.write_text(f"{run}/eval/{label}/results.jsonl", results_to_jsonl(results))

    compared = compare_and_save(uris["base"], uris["tuned"], f"{run}/compare", seed=3)
    assert sorted(p.name for p in (tmp_path / "runs" / "default" / "compare").iterdir()) == sorted(COMPARE_OUTPUTS)
    assert compared.comparison == json.loads(storage.read_text(compared.comparison_uri))
    assert compared.comparison["bootstrap"]["seed"] == 3
    assert compared.verdict[-1].startswith("tuned beats base on ROUGE-L")
    assert ComparisonOutcome.from_json(json.loads(json.dumps(compared.to_json()))) == compared

    summaries = (FileSummary(kind="test", examples=30, source="t.csv"),  # train is not first: found by kind
                 FileSummary(kind="val", examples=5, estimated_tokens=50, max_example_tokens=20, source="v"),
                 FileSummary(kind="train", examples=20, estimated_tokens=900, max_example_tokens=70, source="t"))
    prepared = PreparedData(train="tr.jsonl", val="va.jsonl", test="te.csv", summaries=summaries, cost_usd=0.01)
    tuned_model = TunedModel(job="job-1", key="k", tuned_model="local:job-1", endpoint="local:job-1",
                             create_time="2026-01-01T00:00:00Z", update_time="2026-01-01T00:01:40Z")
    settings = {"run_name": "default", "backend": "local", "price_per_million_training_tokens": 2.0,
                "epochs": 1, "adapter_size": 4, "learning_rate_multiplier": 1.0, "source_model": None}
    report = write_run_report(run, settings, prepared, tuned_model, _evaluation("base", base, uris["base"]),
                              _evaluation("tuned", tuned, uris["tuned"]), compared)
    data = json.loads(storage.read_text(report.report_json_uri))
    assert set(data) == REPORT_KEYS
    assert data["data"]["estimated_training_tokens"] == 900
    assert data["data"]["examples"] == {"test": 30, "val": 5, "train": 20}
    assert data["job"]["duration_s"] == 100.0 and data["job"]["base_model"] == "base-model"
    assert list(data["plots"]) == ["base distribution", "tuned distribution", "distributions", "means", "paired"]
    assert data["comparison"] == compared.comparison and data["verdict"] == list(report.verdict)
    md = storage.read_text(report.report_uri)
    assert md.startswith("# sftflow run `default` (local backend)") and "| job | `job-1` |" in md
    assert report.errors == {"tuned": ("1/30 examples: timeout",)}
