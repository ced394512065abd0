"""One evaluated example (`ExampleResult`) and the JSONL files that hold them.

Below the evaluation engine so that what reads results (stats, plots, reports) does not sit
above a thread pool: the engine writes these records, everything else only reads them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sftflow.errors import CheckpointError

log = logging.getLogger(__name__)


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


def results_by_id(lines: Sequence[str], source: str) -> dict[str, ExampleResult]:
    """Records by id (the last line for an id wins). A bad *last* line is a write cut short
    by a kill and is ignored; a bad line anywhere else is corruption and raises."""
    out: dict[str, ExampleResult] = {}
    last = max((i for i, raw in enumerate(lines, start=1) if raw.strip()), default=0)
    for i, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            rec = ExampleResult.from_dict(json.loads(raw))
        except (ValueError, TypeError) as exc:
            if i == last:
                log.warning("%s:%d: ignoring a truncated last line (%s)", source, i, exc)
                continue
            raise CheckpointError(f"{source}:{i}: not a result record: {exc}") from None
        out[rec.id] = rec
    return out


def results_from_jsonl(text: str, source: str = "<results>") -> list[ExampleResult]:
    """Results from a results/checkpoint file's text (read through sftflow.infra.storage), one per id."""
    return list(results_by_id(text.split("\n"), source).values())


def result_line(result: ExampleResult) -> str:
    """One record as one JSON line (newline included)."""
    return json.dumps(result.to_dict(), ensure_ascii=False) + "\n"


def results_to_jsonl(results: Iterable[ExampleResult]) -> str:
    return "".join(result_line(r) for r in results)
