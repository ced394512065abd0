"""A champion decision (sftflow.records.ChampionDecision, as JSON) as the command line prints it and as a report
section — one text for `sweep` and `pipeline` alike."""

from __future__ import annotations

from typing import Any


def _alias(decision: dict[str, Any]) -> str:
    ckpt = decision.get("checkpoint")
    return f"{decision['alias']}" + (f" (default checkpoint {ckpt})" if ckpt else "")


def decision_lines(decision: dict[str, Any]) -> list[str]:
    """`champion: promoted|not promoted: <reason>`, then the registry alias when one was set."""
    out = [f"champion: {'promoted' if decision['promoted'] else 'not promoted'}: {decision['reason']}"]
    if decision.get("alias"):
        out.append(f"registry alias: {_alias(decision)}")
    return out


def decision_markdown(decision: dict[str, Any], level: int = 3) -> str:
    """A "Champion" section: the verdict with its reason, and the registry alias when one was set."""
    verdict = "promoted" if decision.get("promoted") else "not promoted"
    md = f"\n{'#' * level} Champion\n\n{verdict}: {decision['reason']}\n"
    if decision.get("alias"):
        md += f"\nModel Registry alias: `{decision['alias']}`" + (
            f" (default checkpoint {decision['checkpoint']})" if decision.get("checkpoint") else "") + "\n"
    return md
