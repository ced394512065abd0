"""Markdown of one model's evaluation: metric table, counts, latency, first errors; the mode it ran in,
what batch prediction did (jobs, fallback) and what the generation cost."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sftflow.cost.estimate import usd
from sftflow.evaluation.results import ExampleResult
from sftflow.reporting.cells import ROUGE_UNIT, cell, points
from sftflow.evaluation.rouge import METRICS
from sftflow.evaluation.stats import METRIC_LABELS, counts


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


def batch_lines(batch: Mapping[str, Any] | None) -> list[str]:
    """What a batch evaluation did (`sftflow.evaluation.batch.run.BatchNotes.to_dict()`), one line each; none online."""
    if not batch:
        return []
    out = [f"batch job {j['name']} (round {j['round']}): {j['state']}, {j.get('succeeded', 0)} answered, "
           f"{j.get('failed', 0)} failed rows{' (attached)' if j.get('attached') else ''}" for j in batch["jobs"]]
    out.append(f"{batch['batch_answered']} example(s) answered in batch, {batch['online_examples']} online")
    if batch.get("fallback") == "pending-timeout":
        out.append("a batch job stayed PENDING past batch_pending_timeout: it was cancelled and the "
                   "remaining examples were evaluated online")
    elif batch.get("fallback"):
        out.append(f"remaining examples evaluated online ({batch['fallback']})")
    return out


def cost_line(cost: Mapping[str, Any]) -> str:
    """`Generation cost: $0.12 at batch rates (online would have been $0.24); 1,234 input + 567 output tokens,
    priced as ...` (`cost` from sftflow.cost.report.with_rates; the run cost prices it the same way)."""
    tokens = f"{cost['input_tokens']:,} input + {cost['output_tokens']:,} output tokens"
    source = f"priced as `{cost['priced_as']}` (source {cost['source']})"
    if cost["usd"] is None:
        return f"Generation cost: unknown ({cost['source']}); {tokens}"
    mode, other = ("batch", "online would have been " + usd(cost["online_usd"])) if cost["batch"] else (
        "online", "batch would have been " + usd(cost["batch_usd"]))
    return f"Generation cost: {usd(cost['usd'])} at {mode} rates ({other}); {tokens}, {source}"


def mode_lines(mode: str, batch: Mapping[str, Any] | None, cost: Mapping[str, Any] | None) -> list[str]:
    """The mode, what batch did, and (where it is billed) the cost at the rate paid next to the other mode's."""
    return [f"Mode: {mode}", *batch_lines(batch), *([cost_line(cost)] if cost else [])]


def summary_table_rows(summary: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per metric (`rougeL`, as summary.json names it) for a table artifact: mean, median and std in ROUGE
    points (as every report shows them), n as it is."""
    def shown(k: str, v: Any) -> Any:
        if k not in POINT_FIELDS:
            return v
        return None if v is None or v != v else round(100 * v, 2)  # v != v: NaN

    return [{"metric": m, **{k: shown(k, v) for k, v in vals.items()}} for m, vals in summary.items()]


POINT_FIELDS = ("mean", "median", "std")


def evaluation_markdown(summary: dict[str, dict[str, float]], results: Sequence[ExampleResult], model: str) -> str:
    """Report of one model's evaluation: metric table, counts, latency, first errors."""
    lines = [f"## Evaluation of `{model}`", "", counts_line(results), ""]
    lat = latency_line(results)
    if lat:
        lines += [lat, ""]
    lines += ["| metric | mean | median | std | n |", "|---|---:|---:|---:|---:|"]
    for m in METRICS:
        s = summary[m]
        lines.append(f"| {METRIC_LABELS[m]} | {points(s['mean'])} | {points(s['median'])} | {points(s['std'])} | {s['n']} |")
    lines += ["", f"Scores in {ROUGE_UNIT}."]
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
