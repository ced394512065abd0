"""Markdown and table rows of the base-vs-tuned comparison, and the verdict in words."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sftflow.evaluation.results import ExampleResult
from sftflow.reporting.cells import ROUGE_UNIT, cell, p_value, points, pts
from sftflow.evaluation.report import counts_line
from sftflow.evaluation.stats import METRIC_LABELS, Comparison, verdict


def metrics_table_rows(comparison: Comparison) -> list[dict[str, Any]]:
    """One row per metric for a Prefect table artifact (numbers in ROUGE points, 0–100)."""
    rows = []
    for m, mc in comparison.metrics.items():
        rows.append({
            "metric": METRIC_LABELS.get(m, m),
            "base": round(100 * mc.baseline_mean, 2) if not math.isnan(mc.baseline_mean) else None,
            "tuned": round(100 * mc.tuned_mean, 2) if not math.isnan(mc.tuned_mean) else None,
            "difference": round(100 * mc.difference, 2) if not math.isnan(mc.difference) else None,
            "ci_95": f"[{pts(mc.ci_low)}, {pts(mc.ci_high)}]",
            "p_value": None if mc.p_value is None else round(mc.p_value, 4),
            "wins/ties/losses": f"{mc.wins}/{mc.ties}/{mc.losses}",
            "n_paired": mc.n_paired,
            "verdict": verdict(mc),
        })
    return rows


def best_and_worst(baseline: Sequence[ExampleResult], tuned: Sequence[ExampleResult], k: int = 3,
                   metric: str = "rougeL") -> tuple[list[tuple[ExampleResult, ExampleResult, float]], ...]:
    """The k largest improvements and k largest regressions (tuned − base on `metric`)."""
    b_by = {r.id: r for r in baseline if r.scored}
    pairs = [(b_by[t.id], t, t.scores[metric] - b_by[t.id].scores[metric])
             for t in tuned if t.scored and t.id in b_by]
    pairs.sort(key=lambda x: (-x[2], x[0].id))
    best = [p for p in pairs[:k] if p[2] > 0]
    worst = [p for p in reversed(pairs[-k:]) if p[2] < 0 and p not in best]
    return best, worst


def _examples_table(rows: list[tuple[ExampleResult, ExampleResult, float]]) -> list[str]:
    out = ["| id | base ROUGE-L | tuned ROUGE-L | Δ ROUGE-L | reference | base output | tuned output |",
           "|---|---:|---:|---:|---|---|---|"]
    for b, t, d in rows:
        out.append(f"| `{b.id}` | {points(b.scores['rougeL'], 1)} | {points(t.scores['rougeL'], 1)} | {pts(d)} | "
                   f"{cell(b.reference)} | {cell(b.output)} | {cell(t.output)} |")
    return out


def metrics_table(metrics: dict[str, dict[str, Any]]) -> list[str]:
    """The paired comparison's table (comparison.json's `metrics`), every number in ROUGE points: report.md and
    compare/report.md show this same table."""
    lines = ["| metric | base | tuned | tuned − base | 95% CI | wins/ties/losses | p (Wilcoxon) |",
             "|---|---:|---:|---:|---|---|---:|"]
    for m, x in metrics.items():
        lines.append(f"| {METRIC_LABELS.get(m, m)} | {points(x['baseline_mean'])} | {points(x['tuned_mean'])} | "
                     f"{pts(x['difference'], 2)} | [{pts(x['ci_low'], 2)}, {pts(x['ci_high'], 2)}] | "
                     f"{x['wins']}/{x['ties']}/{x['losses']} | {p_value(x['p_value'])} |")
    return lines


def units_note(n_boot: int, seed: int) -> str:
    return (f"All scores in {ROUGE_UNIT}; the CI is a paired bootstrap (percentile, {n_boot} resamples, seed "
            f"{seed}); significant = p < 0.05 and the CI excludes 0.")


def comparison_markdown(comparison: Comparison, baseline: Sequence[ExampleResult],
                        tuned: Sequence[ExampleResult], plot_links: dict[str, str]) -> str:
    """The comparison report: verdict, key numbers with CIs, exclusions, counts, plots (`plot_links`: name → link,
    relative to the report's folder), and the examples that gained and lost most."""
    c = comparison
    lines = [
        "## Base vs tuned", "",
        f"Base `{c.baseline_model}` vs tuned `{c.tuned_model}` on {c.n_paired} paired examples.", "",
        "### Verdict", "",
        *[f"- {v}" for v in verdict_lines(c)], "",
        *metrics_table(c.to_json()["metrics"]), "",
        units_note(c.n_boot, c.seed), "",
    ]
    if c.excluded:
        reasons = ", ".join(f"{k}: {v}" for k, v in c.excluded.items())
        lines += [f"**Excluded from the comparison:** {c.n_excluded} ({reasons}).", ""]
    lines += ["### Counts", "", f"- base: {counts_line(baseline)}", f"- tuned: {counts_line(tuned)}", ""]
    if plot_links:
        lines += ["### Plots", ""]
        lines += [f"![{PLOT_CAPTIONS.get(name, name)}]({link})" for name, link in plot_links.items()]
        lines.append("")
    best, worst = best_and_worst(baseline, tuned)
    if best:
        lines += ["### Largest improvements (ROUGE-L)", "", *_examples_table(best), ""]
    if worst:
        lines += ["### Largest regressions (ROUGE-L)", "", *_examples_table(worst), ""]
    return "\n".join(lines)


#: What each plot of a run shows, as its caption (alt text) in the reports; keys are report.json's `plots` names.
PLOT_CAPTIONS = {
    "training loss": "Training and validation loss per step (the tuning job's curves)",
    "paired": "ROUGE per example: base (x) vs tuned (y); points above the diagonal improved",
    "means": "Mean ROUGE with 95% CIs, and the paired difference tuned − base",
    "distributions": "Score distributions, base and tuned overlaid",
    "base distribution": "Score distribution of the base model",
    "tuned distribution": "Score distribution of the tuned model",
    "judge win/tie/loss": "Wins, ties and losses per example: ROUGE and the judge",
}


def _verdict_pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def _verdict_p(p: float | None) -> str:
    if p is None:
        return "p=n/a"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def verdict_lines(comparison: Comparison, alpha: float = 0.05) -> list[str]:
    """One sentence per metric, e.g. 'tuned beats base on ROUGE-L by +3.1 points [CI +1.2, +5.0], p=0.002'."""
    lines = []
    for m, mc in comparison.metrics.items():
        label = METRIC_LABELS.get(m, m)
        if mc.n_paired < 2:
            lines.append(f"{label}: too few paired examples to compare (n={mc.n_paired})")
            continue
        ci = f"[CI {_verdict_pts(mc.ci_low)}, {_verdict_pts(mc.ci_high)}]"
        v = verdict(mc, alpha)
        if v == "better":
            head = f"tuned beats base on {label} by {_verdict_pts(mc.difference)} points"
        elif v == "worse":
            head = f"tuned is worse than base on {label} by {_verdict_pts(mc.difference)} points"
        else:
            head = f"no significant difference on {label} ({_verdict_pts(mc.difference)} points)"
        lines.append(f"{head} {ci}, {_verdict_p(mc.p_value)}, n={mc.n_paired}")
    return lines


def headline(comparison: Comparison, metric: str = "rougeL", alpha: float = 0.05) -> str:
    """Did tuning help, in one sentence: the answer, then by how much on `metric` with its 95% CI, e.g.
    'Tuning helped: tuned beats base on ROUGE-L by +46.9 points [95% CI +39.6, +54.2], p=0.008, n=8.'"""
    mc = comparison.metrics[metric]
    label = METRIC_LABELS.get(metric, metric)
    if mc.n_paired < 2:
        return f"Whether tuning helped is not known: too few paired examples to compare on {label} (n={mc.n_paired})."
    tail = (f"{_verdict_pts(mc.difference)} points [95% CI {_verdict_pts(mc.ci_low)}, {_verdict_pts(mc.ci_high)}], "
            f"{_verdict_p(mc.p_value)}, n={mc.n_paired}.")
    v = verdict(mc, alpha)
    if v == "better":
        return f"Tuning helped: tuned beats base on {label} by {tail}"
    if v == "worse":
        return f"Tuning hurt: tuned is worse than base on {label} by {tail}"
    return f"Tuning did not measurably help: no significant difference on {label}, {tail}"
