"""A sweep's leaderboard and champion decision as a table, the lines `sftflow sweep` prints, and markdown."""

from __future__ import annotations

from typing import Any

from sftflow.selection.leaderboard import RANK_METRIC, points, signed_points
from sftflow.selection.champion_report import decision_markdown
from sftflow.evaluation.rouge import METRICS
from sftflow.evaluation.stats import METRIC_LABELS


def table_rows(board: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per entry for a table artifact / the report (points = ROUGE × 100)."""
    rows = []
    for e in board["entries"]:
        d = e["vs_base"].get(RANK_METRIC, {})
        rows.append({
            "rank": len(rows) + 1,
            "configuration": e["label"],
            **{k: v for k, v in e["hyperparameters"].items()},
            "checkpoint": (e["checkpoint"] or {}).get("checkpoint_id", "") if e.get("checkpoint") else "",
            **{METRIC_LABELS[m]: points(e["means"].get(m)) for m in METRICS},
            "ROUGE-L vs base": f"{signed_points(d.get('difference'))} [{signed_points(d.get('ci_low'))}, "
                               f"{signed_points(d.get('ci_high'))}]",
            "cost": "-" if e.get("cost_usd") is None else f"${e['cost_usd']:.4g}",
            "best": "★" if e["label"] == board.get("best") else "",
        })
    return rows


def lines(board: dict[str, Any]) -> list[str]:
    """One line per configuration, as `sftflow sweep` prints them, then the verdict."""
    out = []
    for row in table_rows(board):
        out.append(f"{row['configuration']}: ROUGE-L {row['ROUGE-L']} ({row['ROUGE-L vs base']} vs base), "
                   f"cost {row['cost']}{'  <- best' if row['best'] else ''}")
    out.append(f"best: {board['best'] or 'none'} ({board['best_reason']})")
    return out


def leaderboard_markdown(board: dict[str, Any], plot_uri: str | None = None) -> str:
    """The report section: the table, the rule, the verdict and the plot."""
    rows = table_rows(board)
    md = ["## Sweep leaderboard", "", f"Rule: {board['rule']}.", ""]
    if rows:
        cols = list(rows[0])
        md += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        md += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    md += ["", f"**Best: {board['best'] or 'none'}** — {board['best_reason']}."]
    if plot_uri:
        md += ["", f"![ROUGE-L per configuration]({plot_uri})"]
    return "\n".join(md) + "\n"


def sweep_markdown(board: dict[str, Any], plot_uri: str, decision: dict[str, Any] | None) -> str:
    """The sweep's report: the leaderboard section, then the champion decision and its reason."""
    md = leaderboard_markdown(board, plot_uri)
    return md + decision_markdown(decision) if decision is not None else md
