"""What one step hands the next: typed, frozen records with to/from JSON.

Each codelab step (a `step` module in its concern folder, e.g. sftflow.evaluation.step) returns one of these and the next step receives it; the ones a
step saves (prepared.json, tuned.json, tuning/k….json) are read back through `read`, so a file
written by an older version or edited by hand is a one-line error naming the file and the field,
never a KeyError three steps later. `to_json()` gives exactly the dict that is written (and that
the flows return), so the files' content is the records' content.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from sftflow.infra import storage
from sftflow.backends.base import JobState, JobStatus
from sftflow.errors import SftflowError

R = TypeVar("R", bound="Record")


class RecordError(SftflowError, ValueError):
    """A stored record that is not what this version of sftflow writes (older, or edited by hand)."""


class Record(BaseModel):
    """A frozen record; unknown keys are ignored, missing or mistyped ones are a RecordError."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls: type[R], data: Any, source: str = "<record>") -> R:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise RecordError(f"{source}: not a {cls.__name__} record ({_first_problem(exc)}); "
                              "it was written by another sftflow version or edited: rerun the step that writes it"
                              ) from None

    @classmethod
    def read(cls: type[R], uri: str) -> R:
        """The record stored at `uri` (StorageError if there is none)."""
        return cls.from_json(_load_json(uri), uri)

    @classmethod
    def read_if_exists(cls: type[R], uri: str) -> R | None:
        return cls.read(uri) if storage.exists(uri) else None

    def write(self, uri: str, *, sort_keys: bool = False) -> str:
        return storage.write_text(uri, json.dumps(self.to_json(), indent=2, sort_keys=sort_keys), "application/json")


def _load_json(uri: str) -> Any:
    text = storage.read_text(uri)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise RecordError(f"{uri}: not JSON ({exc})") from None


def _first_problem(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    more = f"; {exc.error_count() - 1} more" if exc.error_count() > 1 else ""
    return f"{where}: {err['msg'].lower()}{more}"


# --------------------------------------------------------------------------- prepare


class FileSummary(Record):
    """One prepared file as validated: examples, estimated tokens (None for the test CSV), problems."""

    kind: str  # "train", "val" or "test"
    examples: int
    estimated_tokens: int | None = None
    max_example_tokens: int | None = None
    source: str
    problems: tuple[dict[str, Any], ...] = ()
    problem_count: int = 0


class PreparedData(Record):
    """runs/<run>/prepared.json: the uploaded datasets and what validation found in each."""

    train: str
    val: str
    test: str
    summaries: tuple[FileSummary, ...]
    cost_usd: float
    uploaded: tuple[str, ...] = ()

    def summary(self, kind: str) -> FileSummary:
        """The summary of the `kind` file, looked up by kind (never by position)."""
        for s in self.summaries:
            if s.kind == kind:
                return s
        raise KeyError(f"prepared data has no {kind!r} file summary")

    def uri(self, kind: str) -> str:
        return {"train": self.train, "val": self.val, "test": self.test}[kind]


# --------------------------------------------------------------------------- tune


def job_status_to_json(st: JobStatus) -> dict[str, Any]:
    d = asdict(st)
    d["state"] = st.state.value
    return d


def job_status_from_json(d: dict[str, Any], source: str = "<job status>") -> JobStatus:
    """A JobStatus from its JSON (extra keys, e.g. a tuning record's `spec`, are ignored)."""
    if not isinstance(d, dict):
        raise RecordError(f"{source}: not a job status record (not a JSON object)")
    names = {f.name for f in fields(JobStatus)}
    values = {k: v for k, v in d.items() if k in names}
    if not isinstance(values.get("name"), str):
        raise RecordError(f"{source}: not a job status record (name: missing or not a string)")
    try:
        values["state"] = JobState(values.get("state"))
    except ValueError:
        raise RecordError(f"{source}: not a job status record (state: {values.get('state')!r} is not a job state)"
                          ) from None
    if isinstance(values.get("metrics"), dict):
        values["metrics"] = {k: [tuple(p) for p in v] for k, v in values["metrics"].items()}
    return JobStatus(**values)


class TuningRecord(Record):
    """<storage root>/tuning/k<key>.json: a finished tuning intent (the job's final status, its
    spec and run name). A rerun finds it and calls no tuning API; cleanup finds what a run made."""

    name: str
    state: JobState
    key: str | None = None
    progress: float | None = None
    step: int | None = None
    total_steps: int | None = None
    tuned_model: str | None = None
    endpoint: str | None = None
    error: str | None = None
    create_time: str | None = None
    update_time: str | None = None
    stats: dict[str, Any] = {}
    metrics: dict[str, list[list[Any]]] = {}  # curve -> [[step, value], ...]
    console_url: str | None = None
    checkpoints: list[dict[str, Any]] = []  # per-epoch checkpoints of a multi-epoch job (JobStatus.checkpoints)
    spec: dict[str, Any] | None = None
    run_name: str | None = None

    @classmethod
    def of(cls, status: JobStatus, spec: dict[str, Any], run_name: str) -> TuningRecord:
        return cls.from_json(dict(job_status_to_json(status), spec=spec, run_name=run_name))

    def status(self) -> JobStatus:
        return job_status_from_json(self.to_json(), "tuning record")


class TunedModel(Record):
    """runs/<run>/tuned.json: the tuned model and endpoint later steps generate with."""

    job: str
    key: str
    tuned_model: str | None
    endpoint: str | None
    stats: dict[str, Any] = {}
    create_time: str | None = None
    update_time: str | None = None
    cost_estimate: dict[str, Any] | None = None


# --------------------------------------------------------------------------- evaluate, compare, report


class Evaluation(Record):
    """One model's evaluation: where its files are, its ROUGE summary and counts, errored examples."""

    label: str
    model: str
    results_uri: str
    report_uri: str
    plot_uri: str
    summary: dict[str, dict[str, float | int | None]]
    counts: dict[str, int]
    errors: tuple[str, ...] = ()  # one line per error kind; non-empty: usable now, never cached
    mode: str = "online"  # "online" or "batch" (Vertex AI batch prediction, billed at the batch rate)
    batch: dict[str, Any] | None = None  # batch mode: jobs, fallback (sftflow.evaluation.batch.run.BatchNotes)
    cost: dict[str, Any] | None = None  # vertex: tokens, USD paid and at either rate (reporting.cost.with_rates)


class ComparisonOutcome(Record):
    """Base vs tuned: comparison.json's URI and content (sftflow.evaluation.stats.Comparison.to_json), plots, verdict."""

    comparison_uri: str
    report_uri: str
    plots: dict[str, str]
    comparison: dict[str, Any]
    verdict: tuple[str, ...]


class Judgement(Record):
    """Baseline vs candidate, judged pairwise (sftflow.judging.step): where the files are, the judge (and its honest
    label), win/tie/loss, win rate and CI, order disagreement, agreement with ROUGE-L (sftflow.judging.summary),
    the examples where judge and ROUGE-L disagree most, errored pairs, and the judge's estimated cost."""

    judge: str
    label: str
    judgements_uri: str
    report_uri: str
    plot_uri: str
    summary: dict[str, Any]
    disagreements: tuple[dict[str, Any], ...] = ()
    errors: tuple[str, ...] = ()  # one line per error kind; non-empty: usable now, never cached
    cost: dict[str, Any] | None = None
    verdict: str = ""


class RunReport(Record):
    """The pipeline's end: report.md and report.json, the verdict, and errored examples per label."""

    report_uri: str
    report_json_uri: str
    verdict: tuple[str, ...]
    comparison: dict[str, Any]
    errors: dict[str, tuple[str, ...]] = {}
    champion: ChampionDecision | None = None  # the tuned model's challenge of the champion
    judgement: Judgement | None = None  # the pairwise judge's verdict, when the run had a judge


# --------------------------------------------------------------------------- sweep


class TunedConfiguration(Record):
    """One grid point of a sweep, tuned: its job, model, endpoint, per-epoch checkpoints, estimated cost."""

    label: str
    job: str
    key: str
    tuned_model: str | None
    endpoint: str
    checkpoints: tuple[dict[str, Any], ...] = ()
    cost_usd: float | None = None


class SweepLeaderboard(Record):
    """runs/<run>/sweep/leaderboard.json's URI, its plot, and the document itself (sftflow.selection.leaderboard.build)."""

    leaderboard_uri: str
    plot_uri: str
    board: dict[str, Any]


class ChampionDecision(Record):
    """What a sweep or a pipeline did to the champion: promoted or not, why, the history entry, the registry alias
    set, and the checkpoint made the tuned model's default (a checkpoint that won, on Vertex)."""

    promoted: bool
    reason: str
    seq: int | None = None
    alias: str | None = None
    checkpoint: str | None = None


class SweepResult(Record):
    """A sweep's end: where the leaderboard, plot and report are, the best entry, failures, the champion."""

    leaderboard_uri: str
    plot_uri: str
    report_uri: str
    best: str | None
    best_reason: str
    entries: tuple[dict[str, Any], ...]
    failed: dict[str, str] = {}
    champion: ChampionDecision | None = None
