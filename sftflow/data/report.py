"""The prepared data as a table (one row per file) and a markdown summary (URIs, tokens, cost)."""

from __future__ import annotations

from collections.abc import Sequence

from sftflow.records import FileSummary, PreparedData


def files_table_rows(summaries: Sequence[FileSummary]) -> list[dict]:
    """One row per validated file: examples, estimated tokens, problems."""
    return [
        {
            "file": s.kind,
            "source": s.source,
            "examples": s.examples,
            "estimated tokens": s.estimated_tokens if s.estimated_tokens is not None else "-",
            "problems": s.problem_count,
        }
        for s in summaries
    ]


def prepared_markdown(prepared: PreparedData, epochs: int, price: float) -> str:
    """What was uploaded, the training tokens and the estimated tuning cost."""
    train = prepared.summary("train")
    md = [
        "# Prepared data",
        "",
        "| file | URI | examples |",
        "|---|---|---|",
        *(f"| {k} | `{prepared.uri(k)}` | {prepared.summary(k).examples} |" for k in ("train", "val", "test")),
        "",
        f"Training tokens (estimated as characters / 4, as Google's SFT notebook does): "
        f"**{train.estimated_tokens:,}** per epoch; longest example ≈ {train.max_example_tokens:,} tokens.",
        f"Estimated tuning cost for {epochs} epoch(s) at ${price:g} per 1M training tokens: "
        f"**${prepared.cost_usd:.2f}** (price is the `price_per_million_training_tokens` setting).",
        f"Uploaded this run: {len(prepared.uploaded)} file(s); identical objects already present were skipped.",
    ]
    return "\n".join(md)
