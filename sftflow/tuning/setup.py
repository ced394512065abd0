"""What the tuning step uses, and nothing else of Settings (as EvalSpec is for an evaluation).

Tuning tasks take a `TuningSetup`, not the whole 51-field Settings: reading one tells what a tuning task can
depend on. Every field is either part of the tuning intent (its key, `sftflow.tuning.plan.build_spec`) or marked
`not_in_key(why)` with the reason it does not change what is tuned; tests/test_tuning.py fails for a field that
is neither. The connection fields keep Settings' names: `make_tuner` and the token counter read them here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from sftflow.config import Settings
from sftflow.tuning.hyperparameters import Hyperparameters


def not_in_key(why: str) -> Any:
    """A field that does not change what a job tunes, with the reason (shown by tests and reviews)."""
    return field(metadata={"in_key": False, "why": why})


_WHERE = "where jobs are created and looked up: a key is only ever searched for there"
_REACH = "how the API is reached, not what it tunes"
_FILES = "where records, claims and scratch files live"
_AWAIT = "how the job is awaited and stopped, not what it tunes"
_GATE = "the cost estimate and its gates, checked before a job is submitted"


@dataclass(frozen=True)
class TuningSetup:
    """A run's tuning step: the intent's inputs (in the key) and how jobs are run, awaited and gated."""

    # The intent: each of these is in the tuning key (with the datasets' content).
    run_name: str
    base_model: str
    hyperparameters: Hyperparameters
    tuned_model_display_name: str
    seed: int  # drives the local trainer
    # Not in the key.
    backend: str = not_in_key(_WHERE)
    project: str | None = not_in_key(_WHERE)
    region: str = not_in_key(_WHERE)
    vertex_base_url: str | None = not_in_key(_REACH)
    request_timeout: float = not_in_key(_REACH)
    storage_root: str = not_in_key(_FILES)
    run_root: str = not_in_key(_FILES)
    work_dir: Path = not_in_key(_FILES)
    local_train_budget_s: float = not_in_key("a wall-clock ceiling on the local trainer: more time continues the "
                                             "same intent (its checkpoint), it is not another one")
    tuning_poll_interval: float = not_in_key(_AWAIT)
    tuning_timeout: float = not_in_key(_AWAIT)
    cancel_job_on_timeout: bool = not_in_key(_AWAIT)
    cancel_job_on_interrupt: bool = not_in_key(_AWAIT)
    claim_stale_after: float = not_in_key("how long another process's claim on the same intent is honoured")
    resubmit_failed: bool = not_in_key("whether a failed job of the same intent is paid for again")
    max_tuning_cost_usd: float = not_in_key(_GATE)
    price_per_million_training_tokens: float = not_in_key(_GATE)
    count_tokens_rpm: float = not_in_key(_GATE)
    concurrency: int = not_in_key(_GATE)
    max_attempts: int = not_in_key(_GATE)
    vertex_access_token: SecretStr | None = field(default=None, repr=False,
                                                  metadata={"in_key": False, "why": _REACH})

    @classmethod
    def from_settings(cls, s: Settings) -> TuningSetup:
        names = {f.name for f in dataclasses.fields(cls)} - {"hyperparameters"}
        return cls(hyperparameters=Hyperparameters.from_settings(s), **{n: getattr(s, n) for n in names})

    def with_hyperparameters(self, hyperparameters: Hyperparameters) -> TuningSetup:
        """The same setup for another configuration (a sweep's grid point)."""
        return dataclasses.replace(self, hyperparameters=hyperparameters)

    @property
    def epochs(self) -> int:  # the name the cost estimate reads
        return self.hyperparameters.epochs
