"""Markdown of one model's evaluation: metric table, counts, latency, first errors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sftflow.results import ExampleResult
from sftflow.reporting.cells import cell, num
from sftflow.rouge import METRICS
from sftflow.stats import METRIC_LABELS, counts


def counts_line(results: Sequence[ExampleResult]) -> str:
    c = counts(results)
    return (f"{c['total']} examples: {c['scored']} scored, {c['errors']} errors, "
            f"{c['blocked']} blocked, {c['empty']} empty answers")


def latency_line(results: Sequence[ExampleResult]) -> str | None:
    lat = np.array([r.latency_s for r in results if r.scored and r.latency_s is not None], dtype=float)
    if not len(lat):
        return None
    tokens_in = sum(r.prompt_tokens or 0 for r in results)
    tokens_out = sum(r.output_tokens or 0 for r in results)
    retries = sum(max(r.attempts - 1, 0) for r in results)
    return (f"latency median {np.median(lat):.2f} s, p95 {np.percentile(lat, 95):.2f} s; "
            f"tokens in {tokens_in:,}, out {tokens_out:,}; {retries} retries")



def evaluation_markdown(summary: dict[str, dict[str, float]], results: Sequence[ExampleResult], model: str) -> str:
    """Report of one model's evaluation: metric table, counts, latency, first errors."""
    lines = [f"## Evaluation of `{model}`", "", counts_line(results), ""]
    lat = latency_line(results)
    if lat:
        lines += [lat, ""]
    lines += ["| metric | mean | median | std | n |", "|---|---:|---:|---:|---:|"]
    for m in METRICS:
        s = summary[m]
        lines.append(f"| {METRIC_LABELS[m]} | {num(s['mean'])} | {num(s['median'])} | {num(s['std'])} | {s['n']} |")
    errors = [r for r in results if r.error]
    if errors:
        lines += ["", f"### Errors ({len(errors)}; not scored, excluded from statistics)", ""]
        lines += [f"- `{r.id}`: {cell(r.error, 160)}" for r in errors[:10]]
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
