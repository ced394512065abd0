"""The judge's section (report.md / the run report), its table artifact rows and its win/tie/loss plot."""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

from sftflow.evaluation.plots import BASE_COLOR, TUNED_COLOR, to_png
from sftflow.evaluation.rouge import METRICS
from sftflow.evaluation.stats import METRIC_LABELS

TIE_COLOR = "#d9d9d9"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def table_rows(s: dict[str, Any], label: str) -> list[dict[str, Any]]:
    """One row per number, for a Prefect table artifact."""
    ci = "-" if s.get("ci_low") is None else f"[{_pct(s['ci_low'])}, {_pct(s['ci_high'])}]"
    return [
        {"what": "judge", "value": label},
        {"what": "pairs judged (both orders)", "value": f"{s['judged']} of {s['pairs']}"},
        {"what": "tuned wins / ties / losses", "value": f"{s['wins']} / {s['ties']} / {s['losses']}"},
        {"what": "win rate (ties count half)", "value": _pct(s["win_rate"])},
        {"what": "95% bootstrap CI", "value": ci},
        {"what": "orders disagreed", "value": f"{s['orders_disagree']} ({_pct(s['order_disagreement_rate'])})"},
        {"what": "same side as ROUGE-L", "value": _pct(s["rouge_agreement_rate"])},
        {"what": "direction agrees with ROUGE-L", "value": str(s["direction_agrees_with_rouge"])},
    ]


def _quote(text: str, limit: int = 400) -> str:
    text = " ".join((text or "").split())
    return (text if len(text) <= limit else text[: limit - 1] + "…").replace("|", "\\|")


def markdown(s: dict[str, Any], label: str, worst: list[dict[str, Any]], cost: dict[str, Any] | None,
             level: int = 2) -> str:
    """The judge's section: numbers, how it judged, and the examples where it and ROUGE-L disagree most."""
    h = "#" * level
    lines = [f"{h} Pairwise judge: {label}", "",
             "Each pair (base answer, tuned answer) on the same test example is judged twice, the answers swapped "
             "the second time; the tuned answer wins only when both orders say so, otherwise it is a tie. "
             "Win rate = (wins + ties / 2) / pairs.", "",
             "| what | value |", "|---|---|", *(f"| {r['what']} | {r['value']} |" for r in table_rows(s, label)), ""]
    if cost is not None:
        usd = "unknown (no list price)" if cost.get("usd") is None else f"${cost['usd']:.4f}"
        lines += [f"Estimated cost: {usd} for {cost['input_tokens']:,} input and {cost['output_tokens']:,} output "
                  f"tokens (characters / 4), priced as `{cost['priced_as']}` ({cost['source']}).", ""]
    if worst:
        lines += [f"{h}# Where the judge and ROUGE-L disagree most", ""]
        for w in worst:
            diff = 100 * (w["candidate_rouge_l"] - w["baseline_rouge_l"])
            lines += [f"- **{w['id']}**: judge: {w['verdict']} (as given: {w['forward']}, swapped: {w['backward']}); "
                      f"ROUGE-L tuned − base {diff:+.1f} points",
                      f"  - base: {_quote(w['baseline_answer'])}",
                      f"  - tuned: {_quote(w['candidate_answer'])}",
                      f"  - judge's explanation: {_quote(w['explanation'])}"]
        lines.append("")
    return "\n".join(lines) + "\n"


def win_tie_loss_figure(s: dict[str, Any], comparison: dict[str, Any] | None, label: str) -> Figure:
    """Stacked bars: tuned wins / ties / losses per ROUGE metric (from the comparison) and by the judge."""
    rows: list[tuple[str, int, int, int]] = []
    for m in METRICS if comparison else ():
        x = comparison["metrics"][m]
        rows.append((METRIC_LABELS[m], x["wins"], x["ties"], x["losses"]))
    rows.append(("judge", s["wins"], s["ties"], s["losses"]))
    fig = Figure(figsize=(8, 0.6 + 0.55 * len(rows)), layout="constrained")
    ax = fig.subplots()
    names = [r[0] for r in rows]
    for i, r in enumerate(rows):
        total = max(1, sum(r[1:]))
        left = 0.0
        for value, color, what in zip(r[1:], (TUNED_COLOR, TIE_COLOR, BASE_COLOR), ("tuned wins", "ties", "base wins")):
            share = value / total
            ax.barh(i, share, left=left, color=color, label=what if i == 0 else None)
            if share >= 0.06:
                ax.text(left + share / 2, i, str(value), ha="center", va="center", fontsize=8)
            left += share
    ax.set_yticks(range(len(rows)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of paired examples")
    ax.set_title(f"Tuned vs base per example: ROUGE and {label}", fontsize=9)
    ax.legend(fontsize=8, loc="lower right", ncols=3)
    return fig


def plot_win_tie_loss(s: dict[str, Any], comparison: dict[str, Any] | None, label: str) -> bytes:
    return to_png(win_tie_loss_figure(s, comparison, label))
