"""The embedded samples cut down for flow tests that tune on vertex but do not test the training data.

Before submitting, a vertex flow counts every training and validation example's tokens with countTokens,
paced to count_tokens_rpm (600/min by default): the full 450 sample examples cost ~45 s per fresh run.
"""

from __future__ import annotations

from pathlib import Path

from sftflow.data.samples import sample_paths


def small_samples(directory: Path, train: int = 20, val: int = 4) -> dict[str, str]:
    """{"train", "val", "test"}: the first `train` / `val` sample examples (same format), the whole test CSV."""
    paths = sample_paths()
    out = {"test": paths["test"]}
    for role, n in (("train", train), ("val", val)):
        src = Path(paths[role])
        dest = Path(directory) / f"small-{n}-{src.name}"
        if not dest.exists():
            dest.write_text("".join(src.read_text(encoding="utf-8").splitlines(keepends=True)[:n]), encoding="utf-8")
        out[role] = str(dest)
    return out
