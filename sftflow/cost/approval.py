"""The approval gate: a new tuning job whose estimate is above `approve_above_usd` needs a person's yes.

The order of the gates before money moves: estimate → hard cap (`max_tuning_cost_usd`, no way
round it) → approval (this module) → submit. Attaching to a job already running, or reusing a
finished one, is not gated: that money is committed. How the yes is asked (`approval_mode`) is the
caller's business: a Prefect pause in the UI (flows/approval.py), a y/N prompt on a terminal, an
approval given in advance (CLI `--approve`), or a refusal when nobody can be asked. What each mode
decides is here (`decide_without_pause`, `ui_decision`); the flow only pauses and hands the answer over.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import IO, Any, Protocol

from sftflow.cost.estimate import CostEstimate, CostGateRefused, GridEstimate, usd


class ApprovalDenied(CostGateRefused):
    """The estimate needed approval and did not get it: no job was submitted."""


class Priced(Protocol):
    """What the gate reads: one job's CostEstimate, or a sweep's GridEstimate (its new jobs together)."""

    @property
    def total_usd(self) -> float: ...

    def summary(self) -> str: ...


def needs_approval(estimate: Priced, approve_above_usd: float) -> bool:
    return estimate.total_usd > approve_above_usd


def refused_message(estimate: Priced, approve_above_usd: float, why: str) -> str:
    """One line: why there is no job, the estimate, the threshold and how to approve."""
    return (f"tuning not approved ({why}): estimated cost {estimate.summary()} is above approve_above_usd "
            f"${approve_above_usd:g}; no job was submitted. Approve with --approve (CLI), in the Prefect UI "
            f"(approval_mode=ui on a deployment), or raise approve_above_usd")


def _header(title: str, estimate: Priced, approve_above_usd: float, cap_usd: float) -> list[str]:
    return [
        f"# {title} {usd(estimate.total_usd)}",
        "",
        f"The estimate is above `approve_above_usd` (${approve_above_usd:g}) and within the hard cap "
        f"`max_tuning_cost_usd` (${cap_usd:g}). Nothing has been submitted: the run is waiting for a "
        "yes (the job is submitted) or a no (the run ends with no job).",
        "",
    ]


def _data(data: list[tuple[str, str, dict]]) -> list[str]:
    return [
        "",
        "## Data",
        "",
        "| file | URI | examples | tokens (characters/4) |",
        "|---|---|---:|---:|",
        *[f"| {role} | `{uri}` | {s.get('examples', 0):,} | {s.get('estimated_tokens', 0):,} |"
          for role, uri, s in data],
    ]


def approval_markdown(estimate: CostEstimate, approve_above_usd: float, cap_usd: float,
                      data: list[tuple[str, str, dict]], job: dict[str, Any]) -> str:
    """What the approver sees: the estimate, the data summary and the exact job's hyperparameters."""
    md = [
        *_header("Approve this tuning job?", estimate, approve_above_usd, cap_usd),
        estimate.markdown(cap_usd).replace("# Tuning cost estimate", "## Cost estimate"),
        *_data(data),
        "",
        "## Job",
        "",
        "| field | value |",
        "|---|---|",
        *[f"| {k} | `{v}` |" for k, v in _flat(job)],
    ]
    return "\n".join(md)


def _flat(job: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """The request's fields as rows, nested ones dotted (config.epoch_count), so each value is one cell."""
    rows: list[tuple[str, Any]] = []
    for k, v in job.items():
        if isinstance(v, dict) and v:
            rows += _flat(v, f"{prefix}{k}.")
        else:
            rows.append((f"{prefix}{k}", v))
    return rows


def grid_approval_markdown(grid: GridEstimate, approve_above_usd: float, cap_usd: float,
                           data: list[tuple[str, str, dict]]) -> str:
    """What the approver of a sweep sees: each new configuration's estimate and the total (one decision
    for the grid), and the data summary. A label names its hyperparameters (e2-a8-lr0p5)."""
    md = [
        *_header(f"Approve this sweep's {len(grid.owed)} new tuning job(s)?", grid, approve_above_usd, cap_usd),
        "## Cost estimate (configurations already tuned or running are not counted: their cost is committed)",
        "",
        grid.markdown(),
        *_data(data),
    ]
    return "\n".join(md)


def ask_terminal(estimate: Priced, approve_above_usd: float,
                 ask: Callable[[str], str] = input) -> bool:
    """y/N on the terminal; anything but y/yes (or end of input) is a no."""
    try:
        answer = ask(f"Estimated tuning cost {estimate.summary()} is above approve_above_usd "
                     f"${approve_above_usd:g}. Submit the job? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def decide_without_pause(estimate: Priced, approve_above_usd: float, mode: str, *, can_pause: bool,
                         ask: Callable[[Priced, float], bool] = ask_terminal) -> str | None:
    """How approval passed without a person in the UI, or None when the run must wait for the UI's answer
    (mode 'ui' with a server that holds the run, `can_pause`; or mode 'suspend', whose flow checks that it can
    be suspended). Raises ApprovalDenied when it is a no."""
    if not needs_approval(estimate, approve_above_usd):
        return f"within approve_above_usd (${approve_above_usd:g})"
    if mode == "approved":
        return "approved in advance"
    if mode == "prompt":
        if ask(estimate, approve_above_usd):
            return "approved on the terminal"
        raise ApprovalDenied(refused_message(estimate, approve_above_usd, "answered no on the terminal"))
    if mode == "refuse" or (mode == "ui" and not can_pause):
        why = ("not asked: no terminal" if mode == "refuse"
               else "no Prefect server holds this run, so nobody can approve it in the UI")
        raise ApprovalDenied(refused_message(estimate, approve_above_usd, why))
    return None


def ui_decision(estimate: Priced, approve_above_usd: float, approve: bool | None, note: str,
                timeout_s: float) -> str:
    """The answer given in the UI (`approve` None: none within `timeout_s`): how approval passed, or
    ApprovalDenied."""
    if approve is None:
        raise ApprovalDenied(refused_message(estimate, approve_above_usd, f"no answer within {timeout_s:g} s"))
    if not approve:
        raise ApprovalDenied(refused_message(estimate, approve_above_usd,
                                             "rejected in the Prefect UI" + (f": {note}" if note else "")))
    return "approved in the Prefect UI"


def cli_approval_default(command: str, stdin: IO, given: Mapping[str, Any] | None = None) -> dict[str, str]:
    """How the command line asks (it has no UI to pause for): y/N on a terminal, else a refusal. It is a
    default: none when a flag or the recipe (`given`: the values they set) or SFTFLOW_APPROVAL_MODE says."""
    if command not in ("tune", "pipeline", "sweep") or "SFTFLOW_APPROVAL_MODE" in os.environ:
        return {}
    if "approval_mode" in (given or {}):
        return {}
    return {"approval_mode": "prompt" if stdin.isatty() else "refuse"}
