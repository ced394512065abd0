"""One evaluated example (`ExampleResult`), the JSONL files that hold them, and the one reader of them.

Below the evaluation engine so that what reads results (stats, plots, reports, the run's cost) does not
sit above a thread pool: the engine writes these records, everything else reads them through
`read_results` / `results_from_jsonl`, never as raw dicts.

The format is part of every evaluation's identity (`results_format()`, in `EvalSpec.identity`: the
evaluate task's cache key and the checkpoint's name), so a changed format recomputes instead of serving
a file written in the old one. To save one more value per example that is derived from the answer: add
the field to `ExampleResult` and one line to `ExampleResult.score` (the identity changes by itself).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

from sftflow.errors import CheckpointError
from sftflow.evaluation.rouge import score_pair
from sftflow.infra import storage

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Bump when what a stored record means changes while its fields stay the same (e.g. a score computed
#: another way). Adding or removing a field needs no bump: `results_format` lists the fields.
RESULTS_VERSION = 1


@dataclass
class ExampleResult:
    """One example's outcome; one JSON line of a results file.

    `error` set: no usable answer after all attempts, `scores` is None and the example is
    left out of statistics. Blocked or empty answers are *not* errors: they are scored
    (ROUGE 0 against a non-empty reference) and flagged so that reports can show them.
    """

    id: str
    model: str
    prompt_chars: int
    reference: str
    output: str = ""
    finish_reason: str | None = None
    blocked: bool = False
    error: str | None = None
    error_kind: str | None = None  # e.g. "401 UNAUTHENTICATED", "429 RESOURCE_EXHAUSTED", "ReadTimeout"
    scores: dict[str, float] | None = None
    latency_s: float | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    attempts: int = 0

    @property
    def scored(self) -> bool:
        return self.error is None and self.scores is not None

    @property
    def empty(self) -> bool:
        """An answer came back but had no text (and was not reported as blocked)."""
        return self.error is None and not self.blocked and not self.output.strip()

    def score(self) -> None:
        """Fill in everything derived from the answer (online and batch alike: the one scoring path)."""
        self.scores = score_pair(self.reference, self.output)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExampleResult:
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        missing = {"id", "model", "reference"} - data.keys()
        if missing:
            raise ValueError(f"missing field(s): {', '.join(sorted(missing))}")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def results_format() -> dict[str, Any]:
    """What a results file's format is: in every evaluation's identity, so another format is never served."""
    return {"version": RESULTS_VERSION, "fields": [f.name for f in fields(ExampleResult)]}


def records_by_id(lines: Sequence[str], source: str, parse: Callable[[Any], T], what: str) -> dict[str, T]:
    """Records of a checkpoint-style JSONL file by id (the last line for an id wins), each parsed from its
    JSON by `parse`. A bad *last* line is a write cut short by a kill and is ignored; a bad line anywhere
    else is corruption and raises CheckpointError naming file:line. One reader for results and judgements."""
    out: dict[str, T] = {}
    last = max((i for i, raw in enumerate(lines, start=1) if raw.strip()), default=0)
    for i, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            rec = parse(json.loads(raw))
        except (ValueError, TypeError) as exc:
            if i == last:
                log.warning("%s:%d: ignoring a truncated last line (%s)", source, i, exc)
                continue
            raise CheckpointError(f"{source}:{i}: not a {what}: {exc}") from None
        out[rec.id] = rec  # type: ignore[attr-defined]
    return out


def results_by_id(lines: Sequence[str], source: str) -> dict[str, ExampleResult]:
    return records_by_id(lines, source, ExampleResult.from_dict, "result record")


def results_from_jsonl(text: str, source: str = "<results>") -> list[ExampleResult]:
    """Results from a results/checkpoint file's text (read through sftflow.infra.storage), one per id."""
    return list(results_by_id(text.split("\n"), source).values())


def read_results(uri: str) -> list[ExampleResult]:
    """The records stored at `uri` (a results.jsonl an evaluation wrote, local or gs://), one per id."""
    return results_from_jsonl(storage.read_text(uri), uri)


def result_line(result: ExampleResult) -> str:
    """One record as one JSON line (newline included)."""
    return json.dumps(result.to_dict(), ensure_ascii=False) + "\n"


def results_to_jsonl(results: Iterable[ExampleResult]) -> str:
    return "".join(result_line(r) for r in results)
