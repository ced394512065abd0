"""Flow prepare_data: download → convert → validate (all files) → upload, with a summary artifact."""

from __future__ import annotations

import json
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.common import settings_for
from sftflow import layout, storage
from sftflow.data.rules import estimate_cost
from tasks.data import convert, converted_or_problems, download, raise_on_problems, upload, validate
from tasks.tuning import check_tuning_data


@flow(name="prepare_data", log_prints=True, persist_result=False, result_serializer="json")
def prepare_data(
    train_uri: str | None = None,
    val_uri: str | None = None,
    test_uri: str | None = None,
    limit: int | None = None,
    shuffle_seed: int | None = None,
    config: dict[str, Any] | None = None,
) -> dict:
    """Download the train/val/test sources, convert chat data to Gemini's format, validate every
    file against Gemini's tuning rules and upload only when all are clean.

    Returns {"train": uri, "val": uri, "test": uri, "summaries": [...], "cost_usd": float}.

    Args:
        train_uri: Training data (chat JSONL: gs://, https:// or a path). None: the backend's default.
        val_uri: Validation data (chat JSONL). None: the backend's default.
        test_uri: Test set (CSV with input_text, output_text). None: the backend's default.
        limit: Examples kept per converted file. None: the setting (default 1000, as the codelab).
        shuffle_seed: Shuffle with this seed before the limit. None: keep file order.
        config: Any other setting of sftflow.config.Settings.
    """
    s = settings_for(config, train_uri=train_uri, val_uri=val_uri, test_uri=test_uri, limit=limit,
                     shuffle_seed=shuffle_seed)
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
    _artifact_table(summaries)
    raise_on_problems(summaries, bad)
    for kind in ("train", "val"):  # what tune checks before submitting, cached by content: no re-download there
        check_tuning_data(conv[kind]["path"], kind, s.work_dir / "checks")

    root = s.storage_root
    uploaded = {
        "train": upload(conv["train"]["path"], root, "train"),
        "val": upload(conv["val"]["path"], root, "val"),
        "test": upload(local["test"], root, "test"),
    }
    train_tokens = summaries[0]["estimated_tokens"] or 0
    cost = estimate_cost(train_tokens, s.epochs, s.price_per_million_training_tokens)
    out = {k: v["uri"] for k, v in uploaded.items()}
    out["summaries"] = summaries
    out["cost_usd"] = cost
    out["uploaded"] = [v["uri"] for v in uploaded.values() if v["uploaded"]]
    _artifact_summary(out, s.epochs, s.price_per_million_training_tokens)
    storage.write_text(layout.prepared_uri(s.run_root), json.dumps(out, indent=2), "application/json")
    log.info("prepared data: train=%s val=%s test=%s", out["train"], out["val"], out["test"])
    return out


def _artifact_table(summaries: list[dict]) -> None:
    rows = [
        {
            "file": s["kind"],
            "source": s["source"],
            "examples": s["examples"],
            "estimated tokens": s["estimated_tokens"] if s["estimated_tokens"] is not None else "-",
            "problems": s["problem_count"],
        }
        for s in summaries
    ]
    create_table_artifact(rows, key="prepared-data", description="Datasets: examples, tokens, problems")


def _artifact_summary(out: dict, epochs: int, price: float) -> None:
    train = out["summaries"][0]
    md = [
        "# Prepared data",
        "",
        "| file | URI | examples |",
        "|---|---|---|",
        *(f"| {k} | `{out[k]}` | {s['examples']} |" for k, s in zip(("train", "val", "test"), out["summaries"])),
        "",
        f"Training tokens (estimated as characters / 4, as Google's SFT notebook does): "
        f"**{train['estimated_tokens']:,}** per epoch; longest example ≈ {train['max_example_tokens']:,} tokens.",
        f"Estimated tuning cost for {epochs} epoch(s) at ${price:g} per 1M training tokens: "
        f"**${out['cost_usd']:.2f}** (price is the `price_per_million_training_tokens` setting).",
        f"Uploaded this run: {len(out['uploaded'])} file(s); identical objects already present were skipped.",
    ]
    create_markdown_artifact("\n".join(md), key="prepare-data-summary", description="Prepared data")
