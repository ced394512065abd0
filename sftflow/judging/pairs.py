"""Pairwise judging: what a judge is asked, the both-orders rule, and the concurrent, checkpointed run.

A *pair* is one test example with two answers: the baseline's and the candidate's. A judge answers one
`PairInstance` (Vertex's `pairwiseSummarizationQualityInput.instance`: `instruction`, `context`,
`prediction` = the answer under test, `baselinePrediction`, `reference`) with a `JudgeAnswer` whose
`choice` is one of the API's `pairwiseChoice` values: BASELINE, CANDIDATE or TIE.

Position bias is controlled here, not trusted to the judge: every pair is asked twice, once as given
(`baselinePrediction` = the baseline's answer) and once swapped (`baselinePrediction` = the candidate's
answer). A side wins only when both orders name it; any other outcome is a tie, and `orders_disagree`
records that the two orders differed (the report shows how often).

How the pairs are run (concurrent, paced, retried, checkpointed): sftflow.judging.run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from sftflow.errors import BackendError
from sftflow.evaluation.results import records_by_id

log = logging.getLogger(__name__)

#: `pairwiseChoice` values (GoogleCloudAiplatformV1beta1PairwiseSummarizationQualityResult, aiplatform.v1beta1
#: discovery document), PAIRWISE_CHOICE_UNSPECIFIED left out: a judge answering it has not decided.
CHOICES = ("BASELINE", "CANDIDATE", "TIE")
#: Sides of a pair, as the report names them.
SIDES = ("candidate", "baseline", "tie")


@dataclass(frozen=True)
class PairInstance:
    """One order of one pair, as a judge receives it (field names: the API's, in snake_case)."""

    instruction: str
    context: str
    prediction: str  # the answer under test in this order
    baseline_prediction: str
    reference: str | None = None


@dataclass(frozen=True)
class JudgeAnswer:
    """A judge's answer to one PairInstance; `choice` relative to that instance (CANDIDATE = `prediction`)."""

    choice: str
    explanation: str = ""
    confidence: float | None = None
    input_tokens: int = 0  # what this request costs (estimated where the service reports no usage)
    output_tokens: int = 0


class Judge(Protocol):
    """What judges pairs: `name` (in cache keys and records), `label` (how reports name it, honestly),
    `identity()` (every setting that changes its answers), `judge(instance)` (raises TransientError for
    what is worth retrying, BackendError for what is not)."""

    name: str
    label: str

    def identity(self) -> dict[str, Any]: ...

    def judge(self, instance: PairInstance) -> JudgeAnswer: ...


@dataclass(frozen=True)
class Pair:
    """A pair to judge: the example's id, the prompt's parts, both answers, the reference, ROUGE-L of each."""

    id: str
    instruction: str
    context: str
    baseline: str
    candidate: str
    reference: str | None
    baseline_rouge_l: float
    candidate_rouge_l: float

    def orders(self) -> tuple[PairInstance, PairInstance]:
        """(as given: the candidate is `prediction`; swapped: the baseline is `prediction`)."""
        return (PairInstance(self.instruction, self.context, self.candidate, self.baseline, self.reference),
                PairInstance(self.instruction, self.context, self.baseline, self.candidate, self.reference))


def side_of(choice: str, swapped: bool) -> str:
    """The side ('candidate', 'baseline', 'tie') a choice names in the given order."""
    if choice not in CHOICES:
        raise BackendError(f"pairwiseChoice: {choice!r} is not one of {', '.join(CHOICES)}", kind="bad choice")
    if choice == "TIE":
        return "tie"
    return ("candidate" if choice == "CANDIDATE" else "baseline") if not swapped else (
        "baseline" if choice == "CANDIDATE" else "candidate")


def both_orders(forward: str, backward: str) -> tuple[str, bool]:
    """(verdict, orders disagree): a side wins only when both orders name it; otherwise a tie."""
    return (forward if forward == backward else "tie"), forward != backward


@dataclass
class JudgedPair:
    """One judged pair; one JSON line of the judging checkpoint and of judgements.jsonl."""

    id: str
    judge: str
    verdict: str | None = None  # 'candidate', 'baseline' or 'tie' (None: errored)
    forward: str | None = None  # the side named with the answers as given
    backward: str | None = None  # ... and swapped
    orders_disagree: bool = False
    explanation: str = ""  # the as-given order's, then the swapped one's when it differs
    confidence: float | None = None  # mean of the two orders'
    baseline_rouge_l: float = 0.0
    candidate_rouge_l: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    error: str | None = None
    error_kind: str | None = None

    @property
    def rouge_l_difference(self) -> float:
        return self.candidate_rouge_l - self.baseline_rouge_l

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> JudgedPair:
        if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not isinstance(data.get("judge"), str):
            raise ValueError("not a judged pair (id and judge: strings required)")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def pair_line(p: JudgedPair) -> str:
    return json.dumps(p.to_dict(), ensure_ascii=False) + "\n"


def pairs_by_id(lines: Sequence[str], source: str) -> dict[str, JudgedPair]:
    """Judged pairs by id (the last line wins); a bad last line is a kill's cut and is skipped."""
    return records_by_id(lines, source, JudgedPair.from_dict, "judged-pair record")
