"""Flow tune: one tuning job per intent, awaited by a polling task; the tuned endpoint comes out."""

from __future__ import annotations

import json
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_image_artifact

from flows.common import read_record, settings_for
from sftflow import layout, storage
from sftflow.backends.base import TuningSpec
from sftflow.config import Settings
from sftflow.tuning import tuning_key
from tasks.tuning import await_tuning_job, read_tuning_record, record_tuned_model, submit_tuning_job


def default_datasets(s: Settings) -> tuple[str, str | None]:
    """The datasets prepare_data produced for this run (an explicit --train/--val wins)."""
    if s.train_uri:
        return s.train_uri, s.val_uri
    uri = layout.prepared_uri(s.run_root)
    prepared = read_record(uri)
    if prepared is None:
        raise FileNotFoundError(f"{uri}: no prepared data for run '{s.run_name}'; run `sftflow prepare` or pass --train")
    return prepared["train"], s.val_uri or prepared["val"]


def build_spec(s: Settings, train_uri: str, val_uri: str | None) -> TuningSpec:
    # Content only (md5), not an object's generation: re-uploading identical bytes is the same intent.
    hashes = {"train": storage.md5(train_uri) or storage.fingerprint(train_uri)}
    if val_uri:
        hashes["val"] = storage.md5(val_uri) or storage.fingerprint(val_uri)
    fields = dict(
        base_model=s.base_model,
        epochs=s.epochs,
        adapter_size=s.adapter_size,
        learning_rate_multiplier=s.learning_rate_multiplier,
        display_name=s.tuned_model_display_name,
    )
    key = tuning_key(hashes, run_name=s.run_name, seed=s.seed, **fields)
    return TuningSpec(train_uri=train_uri, val_uri=val_uri, key=key, seed=s.seed,
                      budget_s=s.local_train_budget_s, **fields)


@flow(name="tune", log_prints=True, persist_result=False, result_serializer="json")
def tune(
    train_uri: str | None = None,
    val_uri: str | None = None,
    epochs: int | None = None,
    adapter_size: int | None = None,
    learning_rate_multiplier: float | None = None,
    config: dict[str, Any] | None = None,
) -> dict:
    """Tune the base model on the prepared data and return the tuned model and endpoint.

    A rerun with the same intent returns the recorded result (no API call) or attaches to the
    job still running; only `resubmit_failed` submits again after a failure.

    Args:
        train_uri: Converted training data URI. None: prepare_data's output for this run.
        val_uri: Converted validation data URI. None: prepare_data's output for this run.
        epochs: Tuning epochs. None: the setting (default 1).
        adapter_size: LoRA adapter size 1, 2, 4, 8 or 16. None: the setting (default 4).
        learning_rate_multiplier: Learning-rate multiplier. None: the setting (default 1.0).
        config: Any other setting, e.g. {"poll_interval": 30, "resubmit_failed": true}.
    """
    s = settings_for(config, train_uri=train_uri, val_uri=val_uri, epochs=epochs, adapter_size=adapter_size,
                     learning_rate_multiplier=learning_rate_multiplier)
    s.require_bucket("tune")
    log = get_run_logger()
    train, val = default_datasets(s)
    spec = build_spec(s, train, val)
    record = read_tuning_record(s, spec.key)
    if record is None:
        job = submit_tuning_job(s, spec)
        print(f"tuning job: {job['name']}" + (" (attached)" if job["attached"] else " (submitted)"))
        status = await_tuning_job(s, job["name"])
        record_tuned_model(s, spec.key, status, spec)
        _loss_plot(s, status)
        record = status
    out = {
        "job": record["name"],
        "key": spec.key,
        "tuned_model": record["tuned_model"],
        "endpoint": record["endpoint"],
        "stats": record.get("stats", {}),
        "create_time": record.get("create_time"),
        "update_time": record.get("update_time"),
    }
    storage.write_text(layout.tuned_uri(s.run_root), json.dumps(out, indent=2), "application/json")
    log.info("tuned model %s, endpoint %s", out["tuned_model"], out["endpoint"])
    return out


def _loss_plot(s: Settings, status: dict) -> None:
    curves = {k: [tuple(p) for p in v] for k, v in (status.get("metrics") or {}).items() if v}
    if not curves:
        return
    from sftflow.plots import plot_loss_curves

    uri = storage.join(s.run_root, "tuning", "loss.png")
    storage.write_bytes(uri, plot_loss_curves(curves), "image/png")
    if uri.startswith("gs://"):
        create_image_artifact(image_url=uri.replace("gs://", "https://storage.cloud.google.com/", 1),
                              key="tuning-loss", description="Training / validation loss")
