"""Step: compare two result sets (paired) and save comparison.json, three plots and report.md
under runs/<run>/compare/ (the list is COMPARE_OUTPUTS)."""

from __future__ import annotations

import json

from sftflow.evaluation import plots, stats
from sftflow.infra import layout, storage
from sftflow.evaluation.results import read_results
from sftflow.records import ComparisonOutcome
from sftflow.reporting import links
from sftflow.evaluation.compare_report import comparison_markdown, verdict_lines

#: The objects compare_and_save writes under its out_dir.
COMPARE_OUTPUTS = ("comparison.json", "distributions.png", "means.png", "paired.png", "report.md")


def results_uri(run_root: str, ref: str) -> str:
    """A label of this run ('base', 'tuned', ...) or a results.jsonl URI/path as given."""
    if ref.endswith(".jsonl"):
        return ref
    return storage.join(layout.eval_dir(run_root, ref), "results.jsonl")


def results_to_compare(run_root: str, baseline: str, tuned: str) -> tuple[str, str]:
    """Both result files (labels of this run or URIs); FileNotFoundError naming one that is not there."""
    uris = results_uri(run_root, baseline), results_uri(run_root, tuned)
    for uri in uris:
        if not storage.exists(uri):
            raise FileNotFoundError(f"{uri}: no results; run `sftflow evaluate` first")
    return uris


def compare_identity(baseline_uri: str, tuned_uri: str, out_dir: str, seed: int = 0) -> list:
    """Both result files' content, where the outputs go, and the bootstrap seed (the CIs depend on it)."""
    return [storage.fingerprint(baseline_uri), storage.fingerprint(tuned_uri), out_dir, seed]


def compare_and_save(baseline_uri: str, tuned_uri: str, out_dir: str, seed: int = 0) -> ComparisonOutcome:
    """Paired comparison over the examples both sides scored: CIs, Wilcoxon, plots, report."""
    baseline, tuned = read_results(baseline_uri), read_results(tuned_uri)
    comparison = stats.compare(baseline, tuned, seed=seed)
    comparison_uri = storage.write_text(storage.join(out_dir, "comparison.json"),
                                        json.dumps(comparison.to_json(), indent=2), "application/json")
    figures = {
        "distributions": plots.plot_distributions(baseline, tuned),
        "means": plots.plot_means_with_ci(comparison),
        "paired": plots.plot_paired_scatter(baseline, tuned),
    }
    plot_uris = {name: storage.write_bytes(storage.join(out_dir, f"{name}.png"), png, "image/png")
                 for name, png in figures.items()}
    md = comparison_markdown(comparison, baseline, tuned, {name: links.relative(uri, out_dir)  # beside report.md
                                                           for name, uri in plot_uris.items()})
    report_uri = storage.write_text(storage.join(out_dir, "report.md"), md, "text/markdown")
    return ComparisonOutcome(comparison_uri=comparison_uri, report_uri=report_uri, plots=plot_uris,
                             comparison=comparison.to_json(), verdict=tuple(verdict_lines(comparison)))
