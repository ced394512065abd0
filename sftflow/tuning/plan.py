"""What a run would tune: its datasets and its TuningSpec (the intent and its key). Used by `tune`, the
pipeline's early cost gate and every configuration of a sweep."""

from __future__ import annotations

from sftflow.backends.base import TuningSpec
from sftflow.config import Settings
from sftflow.infra import layout, storage
from sftflow.records import PreparedData
from sftflow.tuning.intent import tuning_key
from sftflow.tuning.setup import TuningSetup


def default_datasets(s: Settings) -> tuple[str, str | None]:
    """The datasets prepare_data produced for this run (an explicit --train/--val wins)."""
    if s.train_uri:
        return s.train_uri, s.val_uri
    uri = layout.prepared_uri(s.run_root)
    prepared = PreparedData.read_if_exists(uri)
    if prepared is None:
        raise FileNotFoundError(f"{uri}: no prepared data for run '{s.run_name}'; run `sftflow prepare` or pass --train")
    return prepared.train, s.val_uri or prepared.val


def build_spec(setup: TuningSetup, train_uri: str, val_uri: str | None) -> TuningSpec:
    """The tuning intent of `setup` on these datasets: its key covers the datasets' content and every field of
    TuningSetup not marked not_in_key."""
    # Content only (md5), not an object's generation: re-uploading identical bytes is the same intent.
    hashes = {"train": storage.md5(train_uri) or storage.fingerprint(train_uri)}
    if val_uri:
        hashes["val"] = storage.md5(val_uri) or storage.fingerprint(val_uri)
    fields = dict(base_model=setup.base_model, hyperparameters=setup.hyperparameters,
                  display_name=setup.tuned_model_display_name, seed=setup.seed)
    key = tuning_key(hashes, run_name=setup.run_name, **fields)
    return TuningSpec(train_uri=train_uri, val_uri=val_uri, key=key, budget_s=setup.local_train_budget_s, **fields)
