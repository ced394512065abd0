"""Flow sft_pipeline: prepare → (baseline evaluation while the tuning job trains) → evaluate tuned →
compare → report. Every step is a subflow or task; every parameter comes from the typed config."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.common import settings_for
from flows.prepare_data import prepare_data
from flows.tune import tune
from sftflow import layout
from sftflow.records import PreparedData, TunedModel
from sftflow.steps.evaluate import EvalSpec
from tasks.data import download
from tasks.evaluation import compare_task, evaluate_task
from tasks.report import report_run


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

    prepared = PreparedData.from_json(prepare_data(config=cfg))
    test_path = download(prepared.test, s.work_dir / "downloads")
    spec = EvalSpec.from_settings(s)
    baseline_future = evaluate_task(spec, "base").submit(spec, s.base_model, test_path, "base")  # runs while tuning trains
    tuned_model = TunedModel.from_json(tune(config={**cfg, "train_uri": prepared.train, "val_uri": prepared.val}))
    baseline = baseline_future.result()
    tuned = evaluate_task(spec, "tuned")(spec, tuned_model.endpoint, test_path, "tuned")
    compared = compare_task(layout.compare_dir(s.run_root))(baseline.results_uri, tuned.results_uri,
                                                           layout.compare_dir(s.run_root), seed=s.seed)
    report = report_run(s.run_root, s.public_dict(), prepared, tuned_model, baseline, tuned, compared)

    for line in report.verdict:
        log.info(line)
    log.info("report: %s", report.report_uri)
    for label, lines in report.errors.items():
        for line in lines:
            log.warning("%s: %s (not cached; a rerun asks these again)", label, line)
    return report.to_json()
