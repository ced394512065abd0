"""Embedded sample data in the WikiLingua sample formats, used by the offline default."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent


def sample_paths() -> dict[str, str]:
    return {
        "train": str(HERE / "sft_train_samples.jsonl"),
        "val": str(HERE / "sft_val_samples.jsonl"),
        "test": str(HERE / "sft_test_samples.csv"),
    }
