"""The two small interfaces every backend implements, and the data they exchange.

Flows never ask which backend they have: they get a `Generator` and a `Tuner` from
`sftflow.backends.make_generator` / `make_tuner` and use only what is declared here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from sftflow.config import setting_default
from sftflow.tuning.hyperparameters import Hyperparameters


# --------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class GenerationParams:
    """How every request of an evaluation is made.

    Each field is filled from the Settings field of the same name, or the one its metadata
    names under "setting", and defaults to that field's default (Settings holds the numbers);
    evaluate's cache key is built from all fields, so a new one is covered without anyone
    remembering to add it.
    """

    temperature: float = setting_default("temperature")
    max_output_tokens: int = setting_default("max_output_tokens")
    safety_threshold: str = setting_default("safety_threshold")
    timeout_s: float = field(default=setting_default("request_timeout"), metadata={"setting": "request_timeout"})


@dataclass(frozen=True)
class Generation:
    """One model answer. A blocked or empty answer is a Generation too, never an exception."""

    text: str
    finish_reason: str  # e.g. "STOP", "MAX_TOKENS", "SAFETY", "BLOCKED", "EMPTY"
    latency_s: float
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    blocked: bool = False  # the prompt or the answer was blocked by safety filters


@runtime_checkable
class Generator(Protocol):
    """Answers one prompt with one model. Must be safe to call from several threads."""

    model: str

    def generate(self, prompt: str, params: GenerationParams) -> Generation:
        """Raises TransientError for retryable failures, BackendError for permanent ones."""
        ...


# --------------------------------------------------------------------------- tuning


class JobState(str, enum.Enum):
    PENDING = "PENDING"  # queued / pending / updating
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"
    PAUSED = "PAUSED"
    PARTIALLY_SUCCEEDED = "PARTIALLY_SUCCEEDED"

    @property
    def ended(self) -> bool:
        """True when the job will not change state by itself any more.

        PAUSED and PARTIALLY_SUCCEEDED count as ended for the poller: waiting on them would
        never finish, and a partially succeeded job has no usable tuned model.
        """
        return self in _ENDED

    @property
    def alive(self) -> bool:
        """A job in this state may still produce the tuned model: attach to it, don't resubmit."""
        return self in (JobState.PENDING, JobState.RUNNING, JobState.SUCCEEDED)


_ENDED = {
    JobState.SUCCEEDED,
    JobState.FAILED,
    JobState.CANCELLED,
    JobState.EXPIRED,
    JobState.PAUSED,
    JobState.PARTIALLY_SUCCEEDED,
}


@dataclass(frozen=True)
class TuningSpec:
    """Everything that defines one tuning intent. `key` labels the job (one job per intent)."""

    base_model: str
    train_uri: str
    val_uri: str | None
    hyperparameters: Hyperparameters
    display_name: str
    key: str  # stable hash of (dataset content hashes, hyperparameters, base model, run name)
    seed: int = 0
    budget_s: float | None = None  # local backend: wall-clock training budget


@dataclass
class JobStatus:
    name: str
    state: JobState
    key: str | None = None
    progress: float | None = None  # 0..1 where known
    step: int | None = None
    total_steps: int | None = None
    tuned_model: str | None = None  # model resource name / local model id
    endpoint: str | None = None  # what `make_generator` takes to generate with the tuned model
    error: str | None = None
    create_time: str | None = None
    update_time: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)  # billable tokens, example count, ...
    metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # curve -> [(step, value)]
    console_url: str | None = None
    #: One per kept checkpoint (multi-epoch jobs): {checkpoint_id, epoch, step, endpoint}, oldest first.
    checkpoints: list[dict[str, Any]] = field(default_factory=list)


@runtime_checkable
class Tuner(Protocol):
    def request(self, spec: TuningSpec) -> dict[str, Any]:
        """What `submit(spec)` sends, as plain JSON data (Vertex: the arguments of google-genai's
        `tunings.tune`, its CreateTuningJobConfig field by field; local: the runner's parameters). A dry run
        prints it; calls no API."""
        ...

    def submit(self, spec: TuningSpec) -> str:
        """Start a job for `request(spec)` and return its name. Does not look for an existing one."""
        ...

    def get(self, name: str) -> JobStatus: ...

    def cancel(self, name: str) -> None: ...

    def find(self, key: str) -> list[JobStatus]:
        """All jobs labelled with `key`, newest first."""
        ...

    def delete_outputs(self, status: JobStatus, dry_run: bool = True) -> list[str]:
        """Delete (or, with dry_run, only list) the tuned model and endpoint a job produced."""
        ...

    def outputs_exist(self, status: JobStatus) -> bool:
        """Whether a SUCCEEDED job's tuned model and endpoint still exist (not cleaned up)."""
        ...

    def mark_champion(self, status: JobStatus, checkpoint_id: str | None = None,
                      previous: JobStatus | None = None) -> str | None:
        """Mark the job's tuned model as the champion where the backend keeps such a mark (Vertex: the
        Model Registry version alias `champion`, and `checkpoint_id`, when a checkpoint won, as the model's
        default checkpoint) and take the mark off `previous`, the champion it replaces; idempotent, so a
        rerun after a crash finishes the job; returns what was marked, None when nothing was."""
        ...
