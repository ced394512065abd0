"""The pipeline's final report (report.json data and report.md): data, job, comparison with CIs,
plots, verdict."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sftflow.records import ComparisonOutcome, Evaluation, PreparedData, TunedModel
from sftflow.evaluation.rouge import METRICS
from sftflow.evaluation.stats import METRIC_LABELS
from sftflow.tuning.report import data_warning


def _duration_s(start: str | None, end: str | None) -> float | None:
    try:
        a = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
        b = datetime.fromisoformat(str(end).replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None
    return max(0.0, (b - a).total_seconds())


def build_report(*, settings: dict[str, Any], prepared: PreparedData, tuning: TunedModel,
                 comparison: ComparisonOutcome, evaluations: dict[str, Evaluation]) -> dict:
    """The report as JSON-ready data (report.json); `render_markdown` turns it into report.md."""
    train = prepared.summary("train")
    stats = tuning.stats or {}
    billable = stats.get("billable_tokens")
    price = settings["price_per_million_training_tokens"]
    cost = None if billable is None else float(billable) * price / 1e6
    # The estimate the cap was checked against (sftflow.cost.estimate), when the tune step recorded it.
    estimate = tuning.cost_estimate
    estimated_usd = estimate["total_usd"] if estimate else prepared.cost_usd
    basis = (f"the pre-submission estimate: {estimate['method']} × epochs × price" if estimate else
             "what Vertex AI would bill: training tokens estimated as characters / 4 × epochs × price")
    plots = {f"{label} distribution": ev.plot_uri for label, ev in evaluations.items()} | comparison.plots
    return {
        "run_name": settings["run_name"],
        "backend": settings["backend"],
        "data": {
            "train": prepared.train, "val": prepared.val, "test": prepared.test,
            "examples": {s.kind: s.examples for s in prepared.summaries},
            "estimated_training_tokens": train.estimated_tokens,
            "estimated_cost_usd": estimated_usd,
        },
        "job": {
            "name": tuning.job, "tuned_model": tuning.tuned_model, "endpoint": tuning.endpoint,
            "duration_s": _duration_s(tuning.create_time, tuning.update_time),
            "billable_tokens": billable, "cost_usd": cost if cost is not None else estimated_usd,
            "cost_basis": "billable tokens reported by the job" if cost is not None else basis,
            "cost_estimate": estimate,
            "stats": stats,
            "hyperparameters": {k: settings[k] for k in ("epochs", "adapter_size", "learning_rate_multiplier")},
            "base_model": settings.get("source_model") or evaluations["base"].model,
        },
        "evaluations": {k: {"model": v.model, "results": v.results_uri, "summary": v.summary,
                            "counts": v.counts} for k, v in evaluations.items()},
        "comparison": comparison.comparison,
        "comparison_uri": comparison.comparison_uri,
        "plots": plots,
        "verdict": list(comparison.verdict),
    }


def render_markdown(r: dict) -> str:
    d, j, c = r["data"], r["job"], r["comparison"]
    dur = f"{j['duration_s']:.0f} s" if j["duration_s"] is not None else "-"
    lines = [
        f"# sftflow run `{r['run_name']}` ({r['backend']} backend)",
        "",
        *[f"**{v}**  " for v in r["verdict"]],
        "",
        "## Comparison (paired, tuned − base, 95% bootstrap CI)",
        "",
        "| metric | base | tuned | difference | 95% CI | wins/ties/losses | Wilcoxon p |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in METRICS:
        x = c["metrics"][m]
        p = "-" if x["p_value"] is None else f"{x['p_value']:.3g}"
        lines.append(
            f"| {METRIC_LABELS[m]} | {100 * x['baseline_mean']:.2f} | {100 * x['tuned_mean']:.2f} | "
            f"{100 * x['difference']:+.2f} | [{100 * x['ci_low']:+.2f}, {100 * x['ci_high']:+.2f}] | "
            f"{x['wins']}/{x['ties']}/{x['losses']} | {p} |"
        )
    excluded = c.get("excluded") or {}
    lines += [
        "",
        f"Paired examples: {c['n_paired']}; excluded: {sum(excluded.values())}"
        + (f" ({', '.join(f'{k}: {v}' for k, v in excluded.items())})" if excluded else "") + ".",
        "",
        "## Data",
        "",
        "| file | URI | examples |",
        "|---|---|---|",
        *(f"| {k} | `{d[k]}` | {d['examples'][k]} |" for k in ("train", "val", "test")),
        "",
        f"Estimated training tokens: {d['estimated_training_tokens']:,} (characters / 4).",
        "",
        "## Tuning job",
        "",
        "| field | value |",
        "|---|---|",
        f"| job | `{j['name']}` |",
        f"| base model | `{j['base_model']}` |",
        f"| tuned model | `{j['tuned_model']}` |",
        f"| endpoint | `{j['endpoint']}` |",
        f"| duration | {dur} |",
        f"| hyperparameters | {', '.join(f'{k}={v}' for k, v in j['hyperparameters'].items())} |",
        f"| billable tokens | {j['billable_tokens'] if j['billable_tokens'] is not None else '-'} |",
        f"| cost | ${j['cost_usd']:.2f} ({j['cost_basis']}) |",
        *(["", f"**{w}**"] if (w := data_warning(j.get("stats") or {})) else []),
        "",
        "## Plots",
        "",
        *(f"- {name}: `{uri}`" for name, uri in r["plots"].items()),
        "",
        "## Results files",
        "",
        *(f"- {k} ({v['model']}): `{v['results']}`" for k, v in r["evaluations"].items()),
    ]
    return "\n".join(lines) + "\n"
