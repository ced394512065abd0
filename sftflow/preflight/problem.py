"""What a preflight check finds: a Problem (one line, with its fix), a Note (inconclusive), an Ok line."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

Check = Literal["credentials", "vertex", "model", "tuning", "roles", "bucket", "network"]


class Problem(BaseModel):
    """A set-up problem that stops a run: `check: message — fix: fix`, one line."""

    model_config = ConfigDict(frozen=True)

    check: Check
    message: str
    fix: str

    def line(self) -> str:
        return _one_line(f"{self.check}: {self.message} — fix: {self.fix}")


class Finding(BaseModel):
    """A check that passed (`ok`) or could not decide (`note`, e.g. a 429 or 503): never stops a run."""

    model_config = ConfigDict(frozen=True)

    check: Check
    kind: Literal["ok", "note"]
    text: str

    def line(self) -> str:
        return _one_line(f"{self.kind}: {self.check}: {self.text}")


class Report(BaseModel):
    """Everything one preflight found, in check order."""

    model_config = ConfigDict(frozen=True)

    findings: tuple[Finding, ...] = ()
    problems: tuple[Problem, ...] = ()
    elapsed_s: float = 0.0

    @property
    def ready(self) -> bool:
        return not self.problems


def _one_line(text: str) -> str:
    return " ".join(text.split())
