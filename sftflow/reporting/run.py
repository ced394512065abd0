"""The pipeline's final report (report.json data and report.md): the verdict first (did tuning help, by how much on
ROUGE-L with its 95% CI, and the judge's verdict), then the example pairs that show why, the comparison with CIs, the
plots as images, data, job, cost, results files.

Every ROUGE number report.md shows is in ROUGE points (F-measure × 100, 0–100); report.json keeps F-measures (0–1),
as comparison.json and results.jsonl do, and says so in its `units`. Links to the run's files (plots, the comparison
and evaluation reports, results) are relative to report.md's folder (sftflow.reporting.links)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sftflow.cost.estimate import training_usd, usd
from sftflow.evaluation.compare_report import PLOT_CAPTIONS, headline, metrics_table
from sftflow.evaluation.rouge import METRICS
from sftflow.evaluation.stats import Comparison
from sftflow.judging import report as judge_report
from sftflow.records import ComparisonOutcome, Evaluation, Judgement, PreparedData, TunedModel
from sftflow.reporting import examples, links
from sftflow.reporting.cells import ROUGE_UNIT
from sftflow.tuning import hyperparameters
from sftflow.tuning.report import data_warning

#: report.json's units: its scores stay F-measures, as in the files it points to.
UNITS = {
    "rouge": "F-measure, 0–1 (comparison, evaluations.*.summary, example_pairs); report.md shows ROUGE points = "
             "F-measure × 100 (0–100)",
    "usd": "US dollars (fields ending in _usd)",
    "duration_s": "seconds",
}

#: The order report.md shows the plots in (report.json's `plots` names); any other plot follows.
PLOT_ORDER = ("training loss", "paired", "means", "distributions", "judge win/tie/loss", "base distribution",
              "tuned distribution")


def _duration_s(start: str | None, end: str | None) -> float | None:
    try:
        a = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
        b = datetime.fromisoformat(str(end).replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None
    return max(0.0, (b - a).total_seconds())


def build_report(*, settings: dict[str, Any], prepared: PreparedData, tuning: TunedModel,
                 comparison: ComparisonOutcome, evaluations: dict[str, Evaluation],
                 example_pairs: dict[str, list[dict[str, Any]]] | None = None, loss_plot: str | None = None,
                 judgement: Judgement | None = None) -> dict:
    """The report as JSON-ready data (report.json); `render_markdown` turns it into report.md. `example_pairs`:
    sftflow.reporting.examples.choose's output; `loss_plot`: the tuning job's loss curves (runs/<run>/tuning/loss.png)
    when the run has them."""
    train = prepared.summary("train")
    stats = tuning.stats or {}
    billable = stats.get("billable_tokens")
    price = settings["price_per_million_training_tokens"]
    cost = None if billable is None else training_usd(int(billable), 1, price)  # billable counts every epoch
    # The estimate the cap was checked against (sftflow.cost.estimate), when the tune step recorded it.
    estimate = tuning.cost_estimate
    estimated_usd = estimate["total_usd"] if estimate else prepared.cost_usd
    local = (estimate or {}).get("backend", settings["backend"]) == "local"
    basis = (f"the pre-submission estimate: {estimate['method']} × epochs × price" if estimate else
             "what Vertex AI would bill: training tokens estimated as characters / 4 × epochs × price")
    if local:
        basis = "local runs are free; the estimate is what Vertex AI would bill for the same data"
    plots = {f"{label} distribution": ev.plot_uri for label, ev in evaluations.items()} | comparison.plots
    if loss_plot:
        plots["training loss"] = loss_plot
    data = {
        "run_name": settings["run_name"],
        "backend": settings["backend"],
        "units": UNITS,
        "headline": headline(Comparison.from_json(comparison.comparison)),
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
            "billed_usd": 0.0 if local else cost, "estimate_usd": estimated_usd,
            "cost_basis": "billable tokens reported by the job" if cost is not None and not local else basis,
            "cost_estimate": estimate,
            "stats": stats,
            "hyperparameters": {k: settings[k] for k in hyperparameters.names()},
            "base_model": settings.get("source_model") or evaluations["base"].model,
        },
        "evaluations": {k: {"model": v.model, "results": v.results_uri, "report": v.report_uri, "summary": v.summary,
                            "counts": v.counts} for k, v in evaluations.items()},
        "comparison": comparison.comparison,
        "comparison_uri": comparison.comparison_uri,
        "comparison_report_uri": comparison.report_uri,
        "example_pairs": example_pairs,
        "plots": plots,
        "verdict": list(comparison.verdict),
    }
    if judgement is not None:  # the judge's section: win rate and CI, order disagreement, agreement with ROUGE-L
        data["judge"] = judgement.to_json()
        data["plots"]["judge win/tie/loss"] = judgement.plot_uri
    return data


def cost_text(j: dict[str, Any], backend: str) -> str:
    """The tuning row's cost in words: on the local backend what Vertex would bill and that nothing is (it agrees
    with the Cost section's total), else the billed figure or the estimate, and which."""
    if j.get("billed_usd") == 0.0 and backend == "local":
        if j.get("estimate_usd") is None:
            return "local runs are free"
        return f"estimate {usd(j['estimate_usd'])} if billed by Vertex; local runs are free"
    return f"{usd(j['cost_usd'])} ({j['cost_basis']})"


def _verdict_lines(r: dict[str, Any], folder: str) -> list[str]:
    others = [line for m, line in zip(r["comparison"]["metrics"], r["verdict"]) if m != "rougeL"]
    judge = [r["judge"]["verdict"]] if r.get("judge") and r["judge"].get("verdict") else []
    compare = links.file_link(r["comparison_report_uri"], folder) if r.get("comparison_report_uri") else \
        "compare/report.md"
    return [f"**{r['headline']}**", "", *(f"- {v}" for v in judge + others), "",
            f"Why: the examples below show the answers where tuning helped most and where it hurt most; the full "
            f"comparison is in {compare}. Every ROUGE number here is in {ROUGE_UNIT}."]


def _examples_section(r: dict[str, Any], folder: str) -> list[str]:
    pairs = r.get("example_pairs")
    if pairs is None:
        return []
    files = " and ".join(links.file_link(ev["results"], folder) for ev in r["evaluations"].values())
    return ["## Examples: where tuning helped most and where it hurt most", "",
            f"Ranked by ROUGE-L, tuned − base, over the examples both models answered ({files}).", "",
            *examples.markdown(pairs)]


def _plots_section(r: dict[str, Any], folder: str) -> list[str]:
    names = [n for n in PLOT_ORDER if n in r["plots"]] + [n for n in r["plots"] if n not in PLOT_ORDER]
    out = ["## Plots", ""]
    for name in names:
        out += [links.image(PLOT_CAPTIONS.get(name, name), r["plots"][name], folder), ""]
    return out


def render_markdown(r: dict, folder: str) -> str:
    """report.md from report.json's data; `folder` is where report.md lies (links are relative to it)."""
    d, j, c = r["data"], r["job"], r["comparison"]
    dur = f"{j['duration_s']:.0f} s" if j["duration_s"] is not None else "-"
    excluded = c.get("excluded") or {}
    lines = [
        f"# sftflow run `{r['run_name']}` ({r['backend']} backend)",
        "",
        *_verdict_lines(r, folder),
        "",
        *_examples_section(r, folder),
        "## Comparison (paired, tuned − base, 95% bootstrap CI, ROUGE points)",
        "",
        *metrics_table({m: c["metrics"][m] for m in METRICS}),
        "",
        f"Paired examples: {c['n_paired']}; excluded: {sum(excluded.values())}"
        + (f" ({', '.join(f'{k}: {v}' for k, v in excluded.items())})" if excluded else "") + ".",
        *(["", f"The comparison's own report, with counts and the largest improvements and regressions: "
               f"{links.file_link(r['comparison_report_uri'], folder)}."]
          if r.get("comparison_report_uri") else []),
        "",
        *_plots_section(r, folder),
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
        f"| cost | {cost_text(j, r['backend'])} |",
        *(["", f"**{w}**"] if (w := data_warning(j.get("stats") or {})) else []),
        "",
        "## Results files",
        "",
        *(f"- {k} (`{v['model']}`): {links.file_link(v['results'], folder)}"
          + (f"; report {links.file_link(v['report'], folder)}" if v.get("report") else "")
          for k, v in r["evaluations"].items()),
    ]
    md = "\n".join(lines) + "\n"
    if judge := r.get("judge"):
        md += "\n" + judge_report.markdown(judge["summary"], judge["label"], list(judge["disagreements"]),
                                           judge["cost"])
        if judge.get("report_uri"):
            md += f"\nThe judge's report: {links.file_link(judge['report_uri'], folder)}\n"
    return md
