"""What a tuning job leaves in the Vertex AI Model Registry beyond its model: per-epoch checkpoints and the
version alias that marks the champion.

Checkpoints: with `epoch_count` > 1 Vertex keeps about one checkpoint per epoch, each deployed to an endpoint
(`tuned_model.checkpoints[]`: checkpoint_id, epoch, step, endpoint); the job's own endpoint serves the default one.
The default checkpoint can be switched (the checkpoints page's "select the best performing checkpoint ... to be the
default checkpoint", https://cloud.google.com/vertex-ai/generative-ai/docs/models/tuning-checkpoints): REST
`PATCH .../models/ID@version?updateMask=defaultCheckpointId` `{"defaultCheckpointId": ...}`, whose `updateMask` the API
description calls "Required." (https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.models/patch).
google-genai 2.34's `models.update` sends no mask, so this goes through aiplatform's ModelServiceClient.update_model
with a FieldMask. The job's endpoint then names the new default's endpoint. Every checkpoint stays
deployed to its own endpoint, so the champion record keeps naming the endpoint that was evaluated.
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


def _versioned(tuned_model: str) -> str:
    return tuned_model if "@" in tuned_model else f"{tuned_model}@1"


def set_default_checkpoint(models, tuned_model: str, checkpoint_id: str) -> str:
    """Make `checkpoint_id` the default checkpoint of `tuned_model` through an aiplatform ModelServiceClient, the
    update mask naming only that field; returns the default the service reports back."""
    from google.cloud import aiplatform_v1
    from google.protobuf import field_mask_pb2

    model = models.update_model(
        model=aiplatform_v1.Model(name=_versioned(tuned_model), default_checkpoint_id=str(checkpoint_id)),
        update_mask=field_mask_pb2.FieldMask(paths=["default_checkpoint_id"]),
    )
    log.info("model %s now serves checkpoint %s by default", tuned_model, model.default_checkpoint_id)
    return model.default_checkpoint_id


def set_alias(models, tuned_model: str, alias: str) -> str:
    """Give `tuned_model`'s version (`@1` when it names none) the alias through an aiplatform
    ModelServiceClient; returns `model@alias`, the name that now resolves to it."""
    name = _versioned(tuned_model)
    models.merge_version_aliases(name=name, version_aliases=[alias])
    log.info("model %s now carries the alias %s", name, alias)
    return f"{name.split('@', 1)[0]}@{alias}"


def remove_alias(models, tuned_model: str, alias: str) -> None:
    """Take `alias` off `tuned_model`'s version: mergeVersionAliases with "-alias" (a no-op when absent)."""
    name = _versioned(tuned_model)
    models.merge_version_aliases(name=name, version_aliases=[f"-{alias}"])
    log.info("model %s no longer carries the alias %s", name, alias)


def model_id(tuned_model: str) -> str:
    """The registry model a tuned model name belongs to, without its version."""
    return tuned_model.split("@", 1)[0]
