"""Evaluation tasks: score one model on the test set; compare two result sets. Artifacts included."""

from __future__ import annotations

import hashlib
import json

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from sftflow import layout, plots, report, stats, storage
from sftflow.backends import make_generator
from sftflow.backends.base import GenerationParams
from sftflow.config import Settings
from sftflow.data.testset import read_test_csv
from sftflow.evaluation import evaluate, results_from_jsonl, results_to_jsonl
from tasks.common import ProgressArtifact, key_from


def generation_params(s: Settings) -> GenerationParams:
    return GenerationParams(temperature=s.temperature, max_output_tokens=s.max_output_tokens,
                            safety_threshold=s.safety_threshold, timeout_s=s.request_timeout)


def _eval_identity(p: dict) -> list:
    s: Settings = p["settings"]
    return [s.backend, p["model"], storage.fingerprint(p["test_path"]), s.samples, repr(generation_params(s)),
            p["label"], s.run_root]


@task(name="evaluate-model", cache_key_fn=key_from(_eval_identity), persist_result=True)
def evaluate_model(settings: Settings, model: str, test_path: str, label: str) -> dict:
    """Answer and score the first `samples` test examples; results, summary, plot and report in storage.

    Resumable below Prefect's cache: every scored example is in a local checkpoint, so a rerun
    after a crash asks the model only for what is missing.
    """
    log = get_run_logger()
    s = settings
    examples = read_test_csv(test_path, limit=s.samples)
    ident = hashlib.sha256(json.dumps(_eval_identity({"settings": s, "model": model, "test_path": test_path,
                                                      "label": label}), default=str).encode()).hexdigest()
    checkpoint = s.work_dir / "checkpoints" / f"{label}-{ident[:16]}.jsonl"
    generator = make_generator(s, model)
    log.info("evaluating %s on %d examples (concurrency %d, %g rpm); checkpoint %s",
             model, len(examples), s.concurrency, s.rpm, checkpoint)
    results = evaluate(generator, examples, params=generation_params(s), checkpoint=checkpoint,
                       concurrency=s.concurrency, rpm=s.rpm, max_attempts=s.max_attempts,
                       on_progress=ProgressArtifact(f"Evaluating {model} ({label})"))
    summary = stats.summarize(results)
    counts = stats.counts(results)
    out_dir = layout.eval_dir(s.run_root, label)
    results_uri = storage.write_text(storage.join(out_dir, "results.jsonl"), results_to_jsonl(results),
                                     "application/jsonl")
    storage.write_text(storage.join(out_dir, "summary.json"),
                       json.dumps({"model": model, "label": label, "summary": summary, "counts": counts}, indent=2),
                       "application/json")
    plot_uri = storage.write_bytes(storage.join(out_dir, "distribution.png"),
                                   plots.plot_single_distribution(results, label), "image/png")
    md = report.evaluation_markdown(summary, results, model)
    md += f"\n\nResults: `{results_uri}`  \nPlot: `{plot_uri}`\n"
    report_uri = storage.write_text(storage.join(out_dir, "report.md"), md, "text/markdown")
    create_table_artifact(
        [{"metric": m, **{k: round(v, 4) for k, v in vals.items()}} for m, vals in summary.items()],
        key=f"eval-{label}-metrics", description=f"ROUGE of {model}",
    )
    create_markdown_artifact(md, key=f"eval-{label}-report", description=f"Evaluation of {model}")
    log.info("%s: %s", label, {m: round(v["mean"], 4) for m, v in summary.items()})
    return {"label": label, "model": model, "results_uri": results_uri, "report_uri": report_uri,
            "plot_uri": plot_uri, "summary": summary, "counts": counts}


@task(name="compare-results",
      cache_key_fn=key_from(lambda p: [storage.fingerprint(p["baseline_uri"]), storage.fingerprint(p["tuned_uri"]),
                                       p["out_dir"]]),
      persist_result=True)
def compare_results(baseline_uri: str, tuned_uri: str, out_dir: str, seed: int = 0) -> dict:
    """Paired comparison over the examples both sides scored: CIs, Wilcoxon, plots, report."""
    baseline = results_from_jsonl(storage.read_text(baseline_uri), baseline_uri)
    tuned = results_from_jsonl(storage.read_text(tuned_uri), tuned_uri)
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
    md = report.comparison_markdown(comparison, baseline, tuned, plot_uris)
    report_uri = storage.write_text(storage.join(out_dir, "report.md"), md, "text/markdown")
    create_table_artifact(report.metrics_table_rows(comparison), key="comparison-metrics",
                          description="Baseline vs tuned, paired")
    create_markdown_artifact(md, key="comparison-report", description="Baseline vs tuned")
    verdict = stats.verdict_lines(comparison)
    for line in verdict:
        get_run_logger().info(line)
    return {"comparison_uri": comparison_uri, "report_uri": report_uri, "plots": plot_uris,
            "comparison": comparison.to_json(), "verdict": verdict}



# --------------------------------------------------------------------------- cache vs. deleted outputs

#: The objects each task writes under its out_dir (names fixed by the task bodies above).
EVAL_OUTPUTS = ("results.jsonl", "summary.json", "distribution.png", "report.md")
COMPARE_OUTPUTS = ("comparison.json", "distributions.png", "means.png", "paired.png", "report.md")


def _unless_outputs_gone(task, out_dir: str, names: tuple[str, ...]):
    """`task`, or a copy with refresh_cache when an object it writes is gone (cleanup, a hand
    deletion): its cached result names those objects, so serving it would point at nothing.
    The recomputation overwrites the same cache entry; an evaluation reuses its checkpoint."""
    if all(storage.exists(storage.join(out_dir, n)) for n in names):
        return task
    return task.with_options(refresh_cache=True)


def evaluate_task(settings: Settings, label: str):
    """evaluate_model, recomputed past Prefect's cache if a file it wrote for (run, label) is gone."""
    return _unless_outputs_gone(evaluate_model, layout.eval_dir(settings.run_root, label), EVAL_OUTPUTS)


def compare_task(out_dir: str):
    """compare_results, recomputed past Prefect's cache if a file it wrote under out_dir is gone."""
    return _unless_outputs_gone(compare_results, out_dir, COMPARE_OUTPUTS)
