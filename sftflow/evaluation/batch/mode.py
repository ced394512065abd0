"""Which mode an evaluation runs in (`eval_mode`): the one place that decides.

auto: batch on the vertex backend when there are at least `batch_min_examples` examples and the
run is stored in a bucket (Vertex reads batch input from Cloud Storage); online otherwise, and
always on local.
"""

from __future__ import annotations

import logging
from typing import Protocol

from sftflow.errors import ConfigError

log = logging.getLogger(__name__)


class ModeSettings(Protocol):
    """The fields `choose_mode` reads (Settings and sftflow.evaluation.step.EvalSpec have them)."""

    @property
    def backend(self) -> str: ...
    @property
    def eval_mode(self) -> str: ...
    @property
    def storage_root(self) -> str: ...
    @property
    def batch_min_examples(self) -> int: ...


def choose_mode(settings: ModeSettings, n_examples: int) -> str:
    """"batch" or "online" for `n_examples` examples under `settings.eval_mode`."""
    mode = settings.eval_mode
    if settings.backend != "vertex":
        if mode == "batch":
            log.warning("eval_mode=batch: the %s backend has no batch prediction; evaluating online",
                        settings.backend)
        return "online"
    if mode == "online":
        return "online"
    in_bucket = settings.storage_root.startswith("gs://")
    if mode == "batch":
        if not in_bucket:
            raise ConfigError("bucket: required for eval_mode=batch — Vertex AI batch prediction reads its input "
                              "from Cloud Storage (set SFTFLOW_BUCKET or --bucket, or use --mode online)")
        return "batch"
    return "batch" if in_bucket and n_examples >= settings.batch_min_examples else "online"
