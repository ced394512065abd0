"""What a run would tune: its datasets and its TuningSpec (the intent and its key). Used by `tune`, the
pipeline's early cost gate and every configuration of a sweep."""

from __future__ import annotations

from sftflow.backends.base import TuningSpec
from sftflow.config import Settings
from sftflow.infra import layout, storage
from sftflow.records import PreparedData
from sftflow.tuning.hyperparameters import Hyperparameters
from sftflow.tuning.intent import tuning_key


def default_datasets(s: Settings) -> tuple[str, str | None]:
    """The datasets prepare_data produced for this run (an explicit --train/--val wins)."""
    if s.train_uri:
        return s.train_uri, s.val_uri
    uri = layout.prepared_uri(s.run_root)
    prepared = PreparedData.read_if_exists(uri)
    if prepared is None:
        raise FileNotFoundError(f"{uri}: no prepared data for run '{s.run_name}'; run `sftflow prepare` or pass --train")
    return prepared.train, s.val_uri or prepared.val


def build_spec(s: Settings, train_uri: str, val_uri: str | None,
               hyperparameters: Hyperparameters | None = None) -> TuningSpec:
    """The tuning intent of `s` on these datasets (`hyperparameters`: a sweep's grid point; else the run's)."""
    # Content only (md5), not an object's generation: re-uploading identical bytes is the same intent.
    hashes = {"train": storage.md5(train_uri) or storage.fingerprint(train_uri)}
    if val_uri:
        hashes["val"] = storage.md5(val_uri) or storage.fingerprint(val_uri)
    hp = hyperparameters or Hyperparameters.from_settings(s)
    fields = dict(base_model=s.base_model, hyperparameters=hp, display_name=s.tuned_model_display_name, seed=s.seed)
    key = tuning_key(hashes, run_name=s.run_name, **fields)
    return TuningSpec(train_uri=train_uri, val_uri=val_uri, key=key, budget_s=s.local_train_budget_s, **fields)
