"""Flow sft_pipeline: prepare → (baseline evaluation while the tuning job trains) → evaluate tuned →
compare → report. Every step is a subflow or task; every parameter comes from the typed config."""

from __future__ import annotations

import json
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.common import settings_for
from flows.prepare_data import prepare_data
from flows.tune import tune
from sftflow import layout, storage
from sftflow.run_report import build_report, render_markdown
from tasks.data import download
from tasks.evaluation import compare_task, evaluate_task


@flow(name="sft_pipeline", log_prints=True, persist_result=False, result_serializer="json")
def sft_pipeline(
    train_uri: str | None = None,
    val_uri: str | None = None,
    test_uri: str | None = None,
    epochs: int | None = None,
    adapter_size: int | None = None,
    learning_rate_multiplier: float | None = None,
    samples: int | None = None,
    config: dict[str, Any] | None = None,
) -> dict:
    """Data in, a report out saying whether tuning helped; rerunning unchanged does no model call.

    Args:
        train_uri: Training data (chat JSONL: gs://, https:// or a path). None: the backend's default.
        val_uri: Validation data (chat JSONL). None: the backend's default.
        test_uri: Test set (CSV with input_text, output_text). None: the backend's default.
        epochs: Tuning epochs. None: the setting (default 1).
        adapter_size: LoRA adapter size 1, 2, 4, 8 or 16. None: the setting (default 4).
        learning_rate_multiplier: Learning-rate multiplier. None: the setting (default 1.0).
        samples: First N test examples evaluated. None: the setting (default 50).
        config: Any other setting of sftflow.config.Settings, e.g. {"backend": "vertex", "project": "p"}.
    """
    params = dict(train_uri=train_uri, val_uri=val_uri, test_uri=test_uri, epochs=epochs,
                  adapter_size=adapter_size, learning_rate_multiplier=learning_rate_multiplier, samples=samples)
    cfg = {**(config or {}), **{k: v for k, v in params.items() if v is not None}}
    s = settings_for(cfg)
    s.require_bucket("pipeline")
    log = get_run_logger()

    prepared = prepare_data(config=cfg)
    test_path = download(prepared["test"], s.work_dir / "downloads")
    baseline_future = evaluate_task(s, "base").submit(s, s.base_model, test_path, "base")  # runs while tuning trains
    tuning_cfg = {**cfg, "train_uri": prepared["train"], "val_uri": prepared["val"]}
    tuned_model = tune(config=tuning_cfg)
    baseline = baseline_future.result()
    tuned = evaluate_task(s, "tuned")(s, tuned_model["endpoint"], test_path, "tuned")
    comp = compare_task(layout.compare_dir(s.run_root))(baseline["results_uri"], tuned["results_uri"],
                                                        layout.compare_dir(s.run_root), seed=s.seed)

    plots = {"base distribution": baseline["plot_uri"], "tuned distribution": tuned["plot_uri"], **comp["plots"]}
    data = build_report(settings=s.public_dict(), prepared=prepared, tuning=tuned_model,
                        comparison=comp["comparison"], comparison_uri=comp["comparison_uri"],
                        verdict=comp["verdict"], plots=plots,
                        evaluations={"base": baseline, "tuned": tuned})
    md = render_markdown(data)
    report_uri = storage.write_text(storage.join(s.run_root, "report.md"), md, "text/markdown")
    json_uri = storage.write_text(storage.join(s.run_root, "report.json"), json.dumps(data, indent=2),
                                  "application/json")
    create_markdown_artifact(md, key="sft-pipeline-report", description="sftflow run report")
    for line in comp["verdict"]:
        log.info(line)
    log.info("report: %s", report_uri)
    errors = {ev["label"]: ev.get("errors") or [] for ev in (baseline, tuned) if ev.get("errors")}
    for label, lines in errors.items():
        for line in lines:
            log.warning("%s: %s (not cached; a rerun asks these again)", label, line)
    return {"report_uri": report_uri, "report_json_uri": json_uri, "verdict": comp["verdict"],
            "comparison": comp["comparison"], "errors": errors}
