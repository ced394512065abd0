"""What a tuning job will cost, before it is submitted, and the hard cap that refuses it.

The estimate is a typed record (`CostEstimate`) built by `estimate_tuning_cost` from per-file
token counts (`FileTokens`): Vertex `countTokens` counts, or the characters / 4 estimate that
check-tuning-data computed, said which in `method` (`sftflow.cost.token_count`). Everything downstream
(cap, approval, dry run, artifacts, report) reads the record.

Billing: Vertex AI bills supervised tuning per training token, every epoch processing the whole
training set once (https://cloud.google.com/vertex-ai/generative-ai/pricing). Whether validation
tokens are billed is not stated there that we could verify offline, so the validation file is
counted and shown but left out of the total (`billed=False`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from sftflow.errors import SftflowError

PRICE_SOURCE = "https://cloud.google.com/vertex-ai/generative-ai/pricing"
ESTIMATE_METHOD = "estimate (characters/4)"
LOCAL_METHOD = "estimate (characters/4), local backend: nothing is billed, priced as Vertex would"
CAP_ENV = "SFTFLOW_MAX_TUNING_COST_USD"


def usd(x: float) -> str:
    """Dollars with cents, or 2 significant digits below a cent (so $0.0033 is not shown as $0.00)."""
    return f"${x:.2f}" if x == 0 or x >= 0.01 else f"${x:.2g}"


def training_usd(tokens: int, epochs: int, price_per_million: float) -> float:
    """The one billing formula of supervised tuning: every epoch bills every training token once, at
    `price_per_million` per 1M tokens (https://cloud.google.com/vertex-ai/generative-ai/pricing).
    Tokens already summed over epochs (a job's billable tokens) pass `epochs=1`."""
    if tokens < 0 or epochs < 0 or not price_per_million >= 0:  # `not >=` also refuses NaN
        raise ValueError(f"tokens, epochs and price_per_million must be >= 0, got {tokens}, {epochs}, "
                         f"{price_per_million}")
    return tokens * epochs * price_per_million / 1_000_000


@dataclass(frozen=True)
class FileTokens:
    """Token count of one dataset file. `billed`: whether it counts toward the price."""

    role: str  # "train" or "val"
    uri: str
    examples: int
    tokens: int
    billed: bool = True


@dataclass(frozen=True)
class CostEstimate:
    """The price of one tuning intent: tokens per file × epochs × price per 1M tokens."""

    files: tuple[FileTokens, ...]
    epochs: int
    price_per_million: float
    price_source: str
    method: str
    backend: str = "vertex"
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def billed_tokens(self) -> int:
        """Tokens the job processes and bills: billed files' tokens × epochs."""
        return sum(f.tokens for f in self.files if f.billed) * self.epochs

    @property
    def total_usd(self) -> float:
        return training_usd(self.billed_tokens, 1, self.price_per_million)  # billed_tokens counts every epoch

    def file_cost_usd(self, f: FileTokens) -> float:
        return training_usd(f.tokens, self.epochs, self.price_per_million) if f.billed else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["files"] = [asdict(f) for f in self.files]
        d["notes"] = list(self.notes)
        d["billed_tokens"] = self.billed_tokens
        d["total_usd"] = self.total_usd
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CostEstimate:
        files = tuple(FileTokens(**f) for f in d["files"])
        return cls(files=files, epochs=d["epochs"], price_per_million=d["price_per_million"],
                   price_source=d["price_source"], method=d["method"], backend=d.get("backend", "vertex"),
                   notes=tuple(d.get("notes", ())))

    def rows(self) -> list[dict[str, Any]]:
        """One row per file, for a table artifact or a printed plan."""
        return [
            {
                "file": f.role,
                "uri": f.uri,
                "examples": f.examples,
                "tokens": f.tokens,
                "tokens x epochs": f.tokens * self.epochs if f.billed else "not billed",
                "usd": round(self.file_cost_usd(f), 6),
            }
            for f in self.files
        ]

    def summary(self) -> str:
        """One line: total, tokens, epochs, price and how the tokens were counted."""
        return (
            f"{usd(self.total_usd)} ({self.billed_tokens:,} training tokens = "
            f"{sum(f.tokens for f in self.files if f.billed):,} × {self.epochs} epoch(s), "
            f"at ${self.price_per_million:g}/1M tokens; {self.method})"
        )

    def lines(self) -> list[str]:
        """The estimate as printed by `sftflow tune --dry-run`."""
        out = [f"cost estimate ({self.backend}, {self.method}):"]
        for f in self.files:
            billed = (f"{f.tokens * self.epochs:,} tokens × epochs → {usd(self.file_cost_usd(f))}"
                      if f.billed else "not billed (validation; see notes)")
            out.append(f"  {f.role}: {f.uri}: {f.examples:,} examples, {f.tokens:,} tokens, {billed}")
        out.append(f"  price: ${self.price_per_million:g} per 1M training tokens "
                   f"(setting price_per_million_training_tokens; source {self.price_source})")
        out.append(f"  total: {self.summary()}")
        out += [f"  note: {n}" for n in self.notes]
        return out

    def markdown(self, cap_usd: float | None = None) -> str:
        md = [
            "# Tuning cost estimate",
            "",
            "| file | examples | tokens | tokens × epochs | USD |",
            "|---|---:|---:|---:|---:|",
        ]
        for f in self.files:
            te = f"{f.tokens * self.epochs:,}" if f.billed else "not billed"
            md.append(f"| {f.role} (`{f.uri}`) | {f.examples:,} | {f.tokens:,} | {te} | "
                      f"{usd(self.file_cost_usd(f))} |")
        md += [
            "",
            f"**Total: {usd(self.total_usd)}** for {self.epochs} epoch(s) at ${self.price_per_million:g} "
            f"per 1M training tokens ([price source]({self.price_source}); setting "
            f"`price_per_million_training_tokens`). Tokens: {self.method}.",
        ]
        if cap_usd is not None:
            verdict = "within" if within_cap(self, cap_usd) else "**over**"
            md.append(f"Cap (`max_tuning_cost_usd`): ${cap_usd:g}: the estimate is {verdict} it.")
        md += [f"- {n}" for n in self.notes]
        return "\n".join(md)


@dataclass(frozen=True)
class GridEstimate:
    """What a sweep's new jobs will cost together: one figure for the cap and the approval (configurations
    whose job already finished or is running are left out by the caller: that money is committed)."""

    owed: dict[str, CostEstimate]  # configuration label → its estimate, grid order

    @property
    def total_usd(self) -> float:
        return sum(e.total_usd for e in self.owed.values())

    def parts(self) -> str:
        return ", ".join(f"{label} {usd(e.total_usd)}" for label, e in self.owed.items())

    def summary(self) -> str:
        """One line: the total and each configuration's share (read where one job's summary would be)."""
        return f"{usd(self.total_usd)} for the grid's {len(self.owed)} new job(s) ({self.parts()})"

    def markdown(self) -> str:
        md = ["| configuration | epochs | training tokens × epochs | USD |", "|---|---:|---:|---:|"]
        md += [f"| {label} | {e.epochs} | {e.billed_tokens:,} | {usd(e.total_usd)} |" for label, e in self.owed.items()]
        md.append(f"| **total** | | {sum(e.billed_tokens for e in self.owed.values()):,} | **{usd(self.total_usd)}** |")
        return "\n".join(md)


def estimate_tuning_cost(
    files: Iterable[FileTokens],
    *,
    epochs: int,
    price_per_million: float,
    backend: str = "vertex",
    method: str | None = None,
    price_source: str = PRICE_SOURCE,
) -> CostEstimate:
    """The estimate record for these token counts. `method` defaults to the backend's label."""
    if epochs < 1:
        raise ValueError(f"epochs: expected >= 1, got {epochs}")
    if not price_per_million >= 0:  # also refuses NaN
        raise ValueError(f"price_per_million: expected >= 0, got {price_per_million}")
    files = tuple(files)
    notes = []
    if any(not f.billed for f in files):
        notes.append("validation tokens are shown but not priced: the public pricing page does not say "
                     "they are billed; the job's billable token count (once reported) is the truth")
    if backend == "local":
        notes.append("local backend: the price setting is applied so the cap behaves as on Vertex")
    return CostEstimate(files=files, epochs=int(epochs), price_per_million=float(price_per_million),
                        price_source=price_source,
                        method=method or (LOCAL_METHOD if backend == "local" else ESTIMATE_METHOD),
                        backend=backend, notes=tuple(notes))


def within_cap(estimate: CostEstimate, cap_usd: float) -> bool:
    return estimate.total_usd <= cap_usd


class CostGateRefused(SftflowError, RuntimeError):
    """A gate before payment (the cap, or approval) said no: no job was submitted."""


class CostCapExceeded(CostGateRefused):
    """The estimate is over `max_tuning_cost_usd`: no job was submitted."""

    def __init__(self, estimate: CostEstimate, cap_usd: float):
        self.estimate, self.cap_usd = estimate, cap_usd
        super().__init__(refusal_message(estimate, cap_usd))


def refusal_message(estimate: CostEstimate, cap_usd: float) -> str:
    """One line: the estimate, the cap and how to raise it."""
    need = max(math.ceil(estimate.total_usd), 1)
    return (
        f"estimated tuning cost {estimate.summary()} is over the cap of ${cap_usd:g} "
        f"(max_tuning_cost_usd); no job was submitted. Raise the cap with --max-cost {need} or "
        f"{CAP_ENV}={need}, or tune on fewer examples/epochs"
    )


def check_cap(estimate: CostEstimate, cap_usd: float) -> None:
    """Raise CostCapExceeded when the estimate is over the cap (called just before a submit)."""
    if not within_cap(estimate, cap_usd):
        raise CostCapExceeded(estimate, cap_usd)
