"""Evaluation tasks: score one model on the test set; compare two result sets. Artifacts included."""

from __future__ import annotations

import dataclasses
import hashlib
import json

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from sftflow import layout, plots, report, stats, storage
from sftflow.backends import make_generator
from sftflow.backends.base import GenerationParams
from sftflow.config import Settings
from sftflow.data.testset import read_test_csv
from sftflow.evaluation import check_error_rate, evaluate
from sftflow.results import results_from_jsonl, results_to_jsonl
from tasks.common import ProgressArtifact, do_not_cache, key_from


def generation_params(s: Settings) -> GenerationParams:
    """Every GenerationParams field from its Settings field (see GenerationParams' docstring)."""
    return GenerationParams(**{f.name: getattr(s, f.metadata.get("setting", f.name))
                               for f in dataclasses.fields(GenerationParams)})


def _eval_identity(p: dict) -> list:
    """Everything that changes an evaluation's answers: where requests go (backend, project,
    region, endpoint base URL), the model, the test set's content, how many examples, every
    generation parameter (all GenerationParams fields, by name), and where results are written."""
    s: Settings = p["settings"]
    return [s.backend, s.project, s.region, s.vertex_base_url, p["model"], storage.fingerprint(p["test_path"]),
            s.samples, dataclasses.asdict(generation_params(s)), p["label"], s.run_root]


@task(name="evaluate-model", cache_key_fn=key_from(_eval_identity), persist_result=True, result_serializer="json")
def evaluate_model(settings: Settings, model: str, test_path: str, label: str) -> dict:
    """Answer and score the first `samples` test examples; results, summary, plot and report in storage.

    Resumable below Prefect's cache: every scored example is in a local checkpoint, so a rerun
    after a crash asks the model only for what is missing. Errored examples are never a success
    to keep: more than `max_error_rate` of them fails the task (one line per error kind, no
    results written); fewer still succeed but are not cached, so a rerun asks exactly them again.
    """
    log = get_run_logger()
    s = settings
    layout.check_name("label", label)
    out_dir = layout.eval_dir(s.run_root, label)
    examples = read_test_csv(test_path, limit=s.samples)
    ident = hashlib.sha256(json.dumps(_eval_identity({"settings": s, "model": model, "test_path": test_path,
                                                      "label": label}), default=str).encode()).hexdigest()
    checkpoint = layout.checkpoint_path(s.work_dir, label, ident)
    generator = make_generator(s, model)
    log.info("evaluating %s on %d examples (concurrency %d, %g rpm); checkpoint %s",
             model, len(examples), s.concurrency, s.rpm, checkpoint)
    results = evaluate(generator, examples, params=generation_params(s), checkpoint=checkpoint,
                       concurrency=s.concurrency, rpm=s.rpm, max_attempts=s.max_attempts,
                       on_progress=ProgressArtifact(f"Evaluating {model} ({label})"))
    error_lines = check_error_rate(results, s.max_error_rate, model)  # raises above the threshold
    if error_lines:
        do_not_cache()
        for line in error_lines:
            log.warning("%s: %s (not cached: a rerun asks these again)", label, line)
    summary = stats.summarize(results)
    counts = stats.counts(results)
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
        key=layout.artifact_key("eval", label, "metrics"), description=f"ROUGE of {model}",
    )
    create_markdown_artifact(md, key=layout.artifact_key("eval", label, "report"),
                             description=f"Evaluation of {model}")
    log.info("%s: %s", label, {m: round(v["mean"], 4) for m, v in summary.items()})
    return {"label": label, "model": model, "results_uri": results_uri, "report_uri": report_uri,
            "plot_uri": plot_uri, "summary": summary, "counts": counts, "errors": error_lines}


def _compare_identity(p: dict) -> list:
    """Both result files' content, where the outputs go, and the bootstrap seed (the CIs depend on it)."""
    return [storage.fingerprint(p["baseline_uri"]), storage.fingerprint(p["tuned_uri"]), p["out_dir"],
            p.get("seed", 0)]


@task(name="compare-results", cache_key_fn=key_from(_compare_identity), persist_result=True,
      result_serializer="json")
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
