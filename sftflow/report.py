"""Markdown and table builders for evaluation and comparison reports (plain strings/dicts;
the task layer turns them into Prefect artifacts and report files)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from sftflow.results import ExampleResult
from sftflow.rouge import METRICS
from sftflow.stats import METRIC_LABELS, Comparison, counts, verdict, verdict_lines

TEXT_LIMIT = 240


def _cell(text: str | None, limit: int = TEXT_LIMIT) -> str:
    """One markdown table cell: single line, pipes escaped, long text cut with an ellipsis."""
    s = " ".join((text or "").split())
    if len(s) > limit:
        s = s[: limit - 1].rstrip() + "…"
    return s.replace("\\", "\\\\").replace("|", "\\|") or "*(empty)*"


def _f(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _pts(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:+.1f}"


def _p(p: float | None) -> str:
    return "n/a" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _counts_line(results: Sequence[ExampleResult]) -> str:
    c = counts(results)
    return (f"{c['total']} examples: {c['scored']} scored, {c['errors']} errors, "
            f"{c['blocked']} blocked, {c['empty']} empty answers")


def _latency_line(results: Sequence[ExampleResult]) -> str | None:
    lat = np.array([r.latency_s for r in results if r.scored and r.latency_s is not None], dtype=float)
    if not len(lat):
        return None
    tokens_in = sum(r.prompt_tokens or 0 for r in results)
    tokens_out = sum(r.output_tokens or 0 for r in results)
    retries = sum(max(r.attempts - 1, 0) for r in results)
    return (f"latency median {np.median(lat):.2f} s, p95 {np.percentile(lat, 95):.2f} s; "
            f"tokens in {tokens_in:,}, out {tokens_out:,}; {retries} retries")


# --------------------------------------------------------------------------- one evaluation


def evaluation_markdown(summary: dict[str, dict[str, float]], results: Sequence[ExampleResult], model: str) -> str:
    """Report of one model's evaluation: metric table, counts, latency, first errors."""
    lines = [f"## Evaluation of `{model}`", "", _counts_line(results), ""]
    lat = _latency_line(results)
    if lat:
        lines += [lat, ""]
    lines += ["| metric | mean | median | std | n |", "|---|---:|---:|---:|---:|"]
    for m in METRICS:
        s = summary[m]
        lines.append(f"| {METRIC_LABELS[m]} | {_f(s['mean'])} | {_f(s['median'])} | {_f(s['std'])} | {s['n']} |")
    errors = [r for r in results if r.error]
    if errors:
        lines += ["", f"### Errors ({len(errors)}; not scored, excluded from statistics)", ""]
        lines += [f"- `{r.id}`: {_cell(r.error, 160)}" for r in errors[:10]]
        if len(errors) > 10:
            lines.append(f"- … and {len(errors) - 10} more")
    flagged = [r for r in results if r.blocked or r.empty]
    if flagged:
        lines += ["", "### Blocked or empty answers (scored 0)", ""]
        lines += [f"- `{r.id}`: {'blocked' if r.blocked else 'empty'} (finish reason {r.finish_reason})"
                  for r in flagged[:10]]
        if len(flagged) > 10:
            lines.append(f"- … and {len(flagged) - 10} more")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- comparison


def metrics_table_rows(comparison: Comparison) -> list[dict[str, Any]]:
    """One row per metric for a Prefect table artifact (numbers in ROUGE points, 0–100)."""
    rows = []
    for m, mc in comparison.metrics.items():
        rows.append({
            "metric": METRIC_LABELS.get(m, m),
            "base": round(100 * mc.baseline_mean, 2) if not math.isnan(mc.baseline_mean) else None,
            "tuned": round(100 * mc.tuned_mean, 2) if not math.isnan(mc.tuned_mean) else None,
            "difference": round(100 * mc.difference, 2) if not math.isnan(mc.difference) else None,
            "ci_95": f"[{_pts(mc.ci_low)}, {_pts(mc.ci_high)}]",
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
    out = ["| id | Δ ROUGE-L | reference | base output | tuned output |", "|---|---:|---|---|---|"]
    for b, t, d in rows:
        out.append(f"| `{b.id}` | {_pts(d)} | {_cell(b.reference)} | {_cell(b.output)} | {_cell(t.output)} |")
    return out


def comparison_markdown(comparison: Comparison, baseline: Sequence[ExampleResult],
                        tuned: Sequence[ExampleResult], plot_links: dict[str, str]) -> str:
    """The comparison report: verdict, key numbers with CIs, exclusions, counts, plots, and
    the examples that gained and lost most."""
    c = comparison
    lines = [
        "## Base vs tuned", "",
        f"Base `{c.baseline_model}` vs tuned `{c.tuned_model}` on {c.n_paired} paired examples.", "",
        "### Verdict", "",
        *[f"- {v}" for v in verdict_lines(c)], "",
        "| metric | base | tuned | tuned − base | 95% CI | p (Wilcoxon) | wins / ties / losses |",
        "|---|---:|---:|---:|---|---:|---|",
    ]
    for m, mc in c.metrics.items():
        lines.append(
            f"| {METRIC_LABELS.get(m, m)} | {_f(mc.baseline_mean)} | {_f(mc.tuned_mean)} | {_pts(mc.difference)} "
            f"| [{_pts(mc.ci_low)}, {_pts(mc.ci_high)}] | {_p(mc.p_value)} | {mc.wins} / {mc.ties} / {mc.losses} |"
        )
    lines += ["", "Scores are F-measures (0–1); differences and CIs in ROUGE points (×100). "
              f"CI: paired bootstrap, percentile, {c.n_boot} resamples, seed {c.seed}. "
              "Significant = p < 0.05 and the CI excludes 0.", ""]
    if c.excluded:
        reasons = ", ".join(f"{k}: {v}" for k, v in c.excluded.items())
        lines += [f"**Excluded from the comparison:** {c.n_excluded} ({reasons}).", ""]
    lines += ["### Counts", "", f"- base: {_counts_line(baseline)}", f"- tuned: {_counts_line(tuned)}", ""]
    if plot_links:
        lines += ["### Plots", ""]
        lines += [f"![{name}]({link})" for name, link in plot_links.items()]
        lines.append("")
    best, worst = best_and_worst(baseline, tuned)
    if best:
        lines += ["### Largest improvements (ROUGE-L)", "", *_examples_table(best), ""]
    if worst:
        lines += ["### Largest regressions (ROUGE-L)", "", *_examples_table(worst), ""]
    return "\n".join(lines)
