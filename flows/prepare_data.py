"""Flow prepare_data: download → convert → validate (all files) → upload, with a summary artifact."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.common import settings_for
from sftflow.params import RunParams
from sftflow.data.report import files_table_rows, prepared_markdown
from sftflow.data.prepare import raise_on_problems, save_prepared
from tasks.data import convert, converted_or_problems, download, upload, validate
from tasks.tuning import check_tuning_data


@flow(name="prepare_data", log_prints=True, persist_result=False, result_serializer="json")
def prepare_data(config: RunParams = RunParams()) -> dict:
    """Download the train/val/test sources, convert chat data to Gemini's format, validate every
    file against Gemini's tuning rules and upload only when all are clean.

    Returns {"train": uri, "val": uri, "test": uri, "summaries": [...], "cost_usd": float}.

    Args:
        config: The run's parameters (train_uri / val_uri / test_uri, limit, shuffle_seed, where it runs).
    """
    s = settings_for(config)
    s.require_bucket("prepare")
    log = get_run_logger()
    src = s.sources()
    downloads = s.work_dir / "downloads"
    converted = s.work_dir / "converted"

    local = {kind: download(src[kind], downloads) for kind in ("train", "val", "test")}
    # Every file is checked even when an earlier one is bad: one run lists all the problems.
    conv, bad = converted_or_problems({
        kind: convert(local[kind], kind, converted, s.limit, s.shuffle_seed, src[kind], return_state=True)
        for kind in ("train", "val")
    })
    summaries = [validate(conv[kind]["path"], kind, src[kind]) for kind in ("train", "val") if kind in conv]
    summaries.append(validate(local["test"], "test", src["test"]))
    create_table_artifact(files_table_rows(summaries), key="prepared-data",
                          description="Datasets: examples, tokens, problems")
    raise_on_problems(summaries, bad)
    for kind in ("train", "val"):  # what tune checks before submitting, cached by content: no re-download there
        check_tuning_data(conv[kind]["path"], kind, s.work_dir / "checks")

    root = s.storage_root
    uploaded = {
        "train": upload(conv["train"]["path"], root, "train"),
        "val": upload(conv["val"]["path"], root, "val"),
        "test": upload(local["test"], root, "test"),
    }
    prepared = save_prepared(s.run_root, uploaded, summaries, s.epochs, s.price_per_million_training_tokens)
    create_markdown_artifact(prepared_markdown(prepared, s.epochs, s.price_per_million_training_tokens),
                             key="prepare-data-summary", description="Prepared data")
    log.info("prepared data: train=%s val=%s test=%s", prepared.train, prepared.val, prepared.test)
    return prepared.to_json()
