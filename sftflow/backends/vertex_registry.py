"""What a tuning job leaves in the Vertex AI Model Registry beyond its model: per-epoch checkpoints and the
version alias that marks the champion.

Checkpoints: with `epoch_count` > 1 Vertex keeps about one checkpoint per epoch, each deployed to an endpoint
(`tuned_model.checkpoints[]`: checkpoint_id, epoch, step, endpoint); the job's own endpoint serves the default one.
Aliases: `models.mergeVersionAliases` on `models/ID@version` adds (or, with a leading '-', removes) aliases; an
alias names one version of a model at a time
(https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.models/mergeVersionAliases).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"


def checkpoints(job) -> list[dict[str, Any]]:
    """A google-genai TuningJob's `tuned_model.checkpoints`, as plain dicts ordered by step."""
    found = (job.tuned_model.checkpoints or []) if job.tuned_model else []
    out = [{"checkpoint_id": c.checkpoint_id, "epoch": int(c.epoch) if c.epoch is not None else None,
            "step": int(c.step) if c.step is not None else None, "endpoint": c.endpoint} for c in found]
    return sorted(out, key=lambda c: (c["step"] or 0, c["epoch"] or 0))


def set_alias(models, tuned_model: str, alias: str) -> str:
    """Give `tuned_model`'s version (`@1` when it names none) the alias through an aiplatform
    ModelServiceClient; returns `model@alias`, the name that now resolves to it."""
    name = tuned_model if "@" in tuned_model else f"{tuned_model}@1"
    models.merge_version_aliases(name=name, version_aliases=[alias])
    log.info("model %s now carries the alias %s", name, alias)
    return f"{name.split('@', 1)[0]}@{alias}"
