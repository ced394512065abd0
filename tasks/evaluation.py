"""Evaluation tasks: what Prefect adds to sftflow.evaluation.step/compare — cache keys, the
progress artifact, metric tables and report artifacts, and keeping errored results out of the cache."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from sftflow.infra import layout, storage
from sftflow.infra.progress import TerminalProgress, fan_out
from sftflow.records import ComparisonOutcome, Evaluation
from sftflow.evaluation.compare_report import metrics_table_rows
from sftflow.evaluation.report import summary_table_rows
from sftflow.reporting.links import for_prefect_ui
from sftflow.evaluation.stats import Comparison
from sftflow.evaluation.compare import COMPARE_OUTPUTS, compare_and_save, compare_identity
from sftflow.evaluation.step import EVAL_OUTPUTS, EvalSpec, eval_identity, evaluate_and_save
from tasks.common import ProgressArtifact, do_not_cache, key_from


@task(name="evaluate-model", cache_key_fn=key_from(lambda p: eval_identity(p["spec"], p["model"], p["test_path"],
                                                                            p["label"])),
      persist_result=True, result_serializer="json")
def evaluate_model(spec: EvalSpec, model: str, test_path: str, label: str) -> Evaluation:
    """sftflow.evaluation.step.evaluate_and_save, cached on the evaluation's identity (EvalSpec.identity,
    model, test-set content, label); a result with errored examples is never cached."""
    log = get_run_logger()
    log.info("evaluating %s on the first %d examples (mode %s; concurrency %d, %g rpm)", model, spec.samples,
             spec.eval_mode, spec.concurrency, spec.rpm)
    progress = fan_out(ProgressArtifact(f"Evaluating {model} ({label})"), TerminalProgress(label, log.info))
    ev = evaluate_and_save(spec, model, test_path, label, on_progress=progress)
    if ev.errors:
        do_not_cache()
        for line in ev.errors:
            log.warning("%s: %s (not cached: a rerun asks these again)", label, line)
    create_table_artifact(summary_table_rows(ev.summary), key=layout.artifact_key("eval", label, "metrics"),
                          description=f"ROUGE of {model} (ROUGE points, 0–100)")
    create_markdown_artifact(for_prefect_ui(storage.read_text(ev.report_uri), layout.eval_dir(spec.run_root, label)),
                             key=layout.artifact_key("eval", label, "report"), description=f"Evaluation of {model}")
    log.info("%s: mean %s (ROUGE points)", label, {m: round(100 * v["mean"], 2) for m, v in ev.summary.items()
                                                   if v["mean"] is not None})
    return ev


@task(name="compare-results", cache_key_fn=key_from(lambda p: compare_identity(
    p["baseline_uri"], p["tuned_uri"], p["out_dir"], p.get("seed", 0))), persist_result=True, result_serializer="json")
def compare_results(baseline_uri: str, tuned_uri: str, out_dir: str, seed: int = 0) -> ComparisonOutcome:
    """sftflow.evaluation.compare.compare_and_save, cached on both result files' content, out_dir and seed."""
    out = compare_and_save(baseline_uri, tuned_uri, out_dir, seed=seed)
    create_table_artifact(metrics_table_rows(Comparison.from_json(out.comparison)), key="comparison-metrics",
                          description="Baseline vs tuned, paired")
    create_markdown_artifact(for_prefect_ui(storage.read_text(out.report_uri), out_dir), key="comparison-report",
                             description="Baseline vs tuned")
    for line in out.verdict:
        get_run_logger().info(line)
    return out


# --------------------------------------------------------------------------- cache vs. deleted outputs


def _unless_outputs_gone(task, out_dir: str, names: tuple[str, ...]):
    """`task`, or a copy with refresh_cache when an object it writes is gone (cleanup, a hand
    deletion): its cached result names those objects, so serving it would point at nothing.
    The recomputation overwrites the same cache entry; an evaluation reuses its checkpoint."""
    if all(storage.exists(storage.join(out_dir, n)) for n in names):
        return task
    return task.with_options(refresh_cache=True)


def evaluate_task(spec: EvalSpec, label: str):
    """evaluate_model, recomputed past Prefect's cache if a file it wrote for (run, label) is gone."""
    return _unless_outputs_gone(evaluate_model, layout.eval_dir(spec.run_root, label), EVAL_OUTPUTS)


def compare_task(out_dir: str):
    """compare_results, recomputed past Prefect's cache if a file it wrote under out_dir is gone."""
    return _unless_outputs_gone(compare_results, out_dir, COMPARE_OUTPUTS)
