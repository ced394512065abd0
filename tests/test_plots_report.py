"""Plots are real PNGs with the expected panels; reports carry the numbers and examples."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from sftflow.evaluation import plots
from sftflow.evaluation import compare_report as report_cmp
from sftflow.evaluation.report import evaluation_markdown, summary_table_rows
from sftflow.evaluation.results import ExampleResult
from sftflow.evaluation.rouge import METRICS
from sftflow.evaluation.stats import compare, summarize


def res(i, score, model, output="an output", error=None, blocked=False):
    scores = None if error else {m: float(score) for m in METRICS}
    return ExampleResult(id=f"e{i:02d}", model=model, prompt_chars=100, reference=f"Reference summary {i} " * 3,
                         output="" if blocked else output, finish_reason="SAFETY" if blocked else "STOP",
                         blocked=blocked, error=error, scores=scores, latency_s=0.2 + i / 100,
                         prompt_tokens=25, output_tokens=5, attempts=1)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    b = rng.uniform(0.1, 0.5, 30)
    t = np.clip(b + 0.05 + rng.normal(0, 0.08, 30), 0, 1)
    base = [res(i, s, "gemini-2.5-flash", output=f"base out {i} | pipe\nnewline") for i, s in enumerate(b)]
    tuned = [res(i, s, "endpoints/123", output=f"tuned out {i} " + "long " * 100) for i, s in enumerate(t)]
    base[3] = res(3, 0.0, "gemini-2.5-flash", blocked=True)
    tuned[4] = res(4, 0, "endpoints/123", error="TransientError after 6 attempts: 429")
    return base, tuned, compare(base, tuned, n_boot=1000)


def is_png(data: bytes) -> bool:
    return data.startswith(plots.PNG_SIGNATURE) and len(data) > 2000


def test_distribution_plots(data):
    base, tuned, _ = data
    fig = plots.distributions_figure(base, tuned)
    assert [ax.get_title() for ax in fig.axes] == ["ROUGE-1", "ROUGE-2", "ROUGE-L"]
    # two overlaid histograms of 20 bins each; n excludes the errored example
    assert len(fig.axes[0].patches) == 40
    assert "n=29" in fig.axes[0].get_legend().get_texts()[1].get_text()
    assert is_png(plots.plot_distributions(base, tuned))
    single = plots.distributions_figure(base, None, labels=("gemini-2.5-flash", ""))
    assert len(single.axes) == 3 and len(single.axes[2].patches) == 20
    assert is_png(plots.plot_single_distribution(base, "gemini-2.5-flash"))


def test_means_plot_has_ci_whiskers(data):
    _, _, c = data
    fig = plots.means_figure(c)
    ax_m, ax_d = fig.axes
    assert len(ax_m.patches) == 6 and len(ax_d.patches) == 3
    heights = [p.get_height() for p in ax_d.patches]
    assert heights == pytest.approx([100 * c.metrics[m].difference for m in METRICS])
    assert "CI" in ax_d.get_title() and "each mean" in ax_m.get_title()
    assert len(ax_d.containers) == 2  # bars + error bars
    assert is_png(plots.plot_means_with_ci(c))


def test_paired_scatter(data):
    base, tuned, c = data
    fig = plots.paired_scatter_figure(base, tuned)
    assert len(fig.axes) == 3
    offsets = fig.axes[2].collections[0].get_offsets()
    assert len(offsets) == c.n_paired == 29
    mc = c.metrics["rougeL"]
    assert fig.axes[2].get_title() == f"ROUGE-L: {mc.wins} up, {mc.losses} down, {mc.ties} tied"
    assert is_png(plots.plot_paired_scatter(base, tuned))


def test_loss_curves():
    metrics = {"/train_total_loss": [(i, 2.0 / (i + 1)) for i in range(20)],
               "/eval_total_loss": [(5, 1.0), (10, 0.6), (15, 0.5)],
               "/train_fraction_of_correct_next_step_preds": [(i, i / 20) for i in range(20)]}
    fig = plots.loss_curves_figure(metrics)
    assert len(fig.axes) == 2
    assert sorted(line.get_label() for line in fig.axes[0].lines) == ["/eval_total_loss", "/train_total_loss"]
    assert len(fig.axes[1].lines) == 1
    assert is_png(plots.plot_loss_curves(metrics))
    assert is_png(plots.plot_loss_curves({}))  # no curves yet: still a valid image


def test_png_bytes_deterministic(data):
    base, tuned, _ = data
    assert plots.plot_paired_scatter(base, tuned) == plots.plot_paired_scatter(base, tuned)


def test_evaluation_markdown(data):
    base, _, _ = data
    md = evaluation_markdown(summarize(base), base, "gemini-2.5-flash")
    assert "## Evaluation of `gemini-2.5-flash`" in md
    assert "30 examples: 30 scored, 0 errors, 1 blocked, 0 empty answers" in md
    mean = summarize(base)["rougeL"]["mean"]
    assert f"| ROUGE-L | {100 * mean:.2f} |" in md and "ROUGE points (F-measure × 100, 0–100)" in md  # one unit
    assert "`e03`: blocked (finish reason SAFETY)" in md
    rows = summary_table_rows(summarize(base))  # the eval-<label>-metrics artifact: points too
    assert rows[2]["metric"] == "rougeL" and rows[2]["mean"] == round(100 * mean, 2) and rows[2]["n"] == 30
    assert summary_table_rows({"rougeL": {"mean": float("nan"), "median": None, "std": 0.0, "n": 0}})[0] == {
        "metric": "rougeL", "mean": None, "median": None, "std": 0.0, "n": 0}


def test_comparison_markdown_and_rows(data):
    base, tuned, c = data
    md = report_cmp.comparison_markdown(c, base, tuned, {"distributions": "plots/dist.png"})
    mc = c.metrics["rougeL"]
    # the table in ROUGE points, as report.md's (base and tuned too, not F-measures)
    assert (f"| ROUGE-L | {100 * mc.baseline_mean:.2f} | {100 * mc.tuned_mean:.2f} | {100 * mc.difference:+.2f} | "
            f"[{100 * mc.ci_low:+.2f}, {100 * mc.ci_high:+.2f}] | {mc.wins}/{mc.ties}/{mc.losses} | <0.001 |") in md
    # seeded data with a +5-point effect: the CI excludes zero, so the verdict is "beats"
    assert mc.ci_low > 0 and mc.p_value < 0.001
    assert (f"- tuned beats base on ROUGE-L by {100 * mc.difference:+.1f} points "
            f"[CI {100 * mc.ci_low:+.1f}, {100 * mc.ci_high:+.1f}], p<0.001, n=29\n") in md
    assert "error in tuned: 1" in md
    assert "base: 30 examples: 30 scored, 0 errors, 1 blocked" in md
    assert "tuned: 30 examples: 29 scored, 1 errors" in md
    assert "![Score distributions, base and tuned overlaid](plots/dist.png)" in md  # captioned, link as given
    assert "### Largest improvements (ROUGE-L)" in md and "### Largest regressions (ROUGE-L)" in md
    assert re.search(r"base out \d+ \\\| pipe newline", md)  # table-safe: pipes escaped, one line
    assert "…" in md and "long " * 60 not in md  # long outputs truncated
    best, worst = report_cmp.best_and_worst(base, tuned)
    assert best[0][2] == max(t.scores["rougeL"] - b.scores["rougeL"]
                             for b, t in zip(base, tuned) if b.scored and t.scored)
    assert all(d < 0 for _, _, d in worst)
    rows = report_cmp.metrics_table_rows(c)
    assert [r["metric"] for r in rows] == ["ROUGE-1", "ROUGE-2", "ROUGE-L"]
    assert rows[2]["difference"] == round(100 * mc.difference, 2) and rows[2]["n_paired"] == 29
    json.dumps(rows)  # fit for a table artifact
