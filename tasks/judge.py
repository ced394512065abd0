"""Judge task: what Prefect adds to sftflow.judging.step — the cache key (both answer sets, the test set, the judge
and its settings, the sample), the progress artifact, the table and report artifacts, errored pairs kept out of
the cache."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from sftflow.config import Settings
from sftflow.infra import layout, storage
from sftflow.infra.progress import TerminalProgress, fan_out
from sftflow.judging import report
from sftflow.judging.step import JUDGE_OUTPUTS, JudgeSpec, judge_and_save, judge_identity, judge_label
from sftflow.records import ComparisonOutcome, Evaluation, Judgement
from tasks.common import ProgressArtifact, do_not_cache, key_from
from tasks.evaluation import _unless_outputs_gone


@task(name="judge-pairs", cache_key_fn=key_from(lambda p: judge_identity(
    p["spec"], p["baseline_uri"], p["candidate_uri"], p["test_path"], p["out_dir"])),
      persist_result=True, result_serializer="json")
def judge_results(spec: JudgeSpec, baseline_uri: str, candidate_uri: str, test_path: str, out_dir: str,
                  comparison: dict[str, Any] | None = None) -> Judgement:
    """sftflow.judging.step.judge_and_save, cached on judge_identity; a result with errored pairs is never cached."""
    log = get_run_logger()
    label = judge_label(spec)
    log.info("judging up to %d pairs in both orders with the %s (concurrency %d, %g rpm)", spec.judge_samples,
             label, spec.concurrency, spec.rpm)
    progress = fan_out(ProgressArtifact(f"Judging pairs: {label}"), TerminalProgress("judge", log.info))
    out = judge_and_save(spec, baseline_uri, candidate_uri, test_path, out_dir, comparison=comparison,
                         on_progress=progress)
    if out.errors:
        do_not_cache()
        for line in out.errors:
            log.warning("judge: %s (not cached: a rerun asks these pairs again)", line)
    create_table_artifact(report.table_rows(out.summary, out.label), key="judge-summary",
                          description=f"Pairwise judge: {out.label}")
    create_markdown_artifact(storage.read_text(out.report_uri), key="judge-report", description="Pairwise judge")
    log.info("%s", out.verdict)
    return out


def judge_task(out_dir: str):
    """judge_results, recomputed past Prefect's cache if a file it wrote under out_dir is gone."""
    return _unless_outputs_gone(judge_results, out_dir, JUDGE_OUTPUTS)


def judge_tuned(s: Settings, baseline: Evaluation, tuned: Evaluation, test_path: str,
                compared: ComparisonOutcome) -> Judgement | None:
    """The pipeline's judge step: base vs tuned on the examples both answered; None with `judge: none`."""
    spec = JudgeSpec.from_settings(s)
    if spec is None:
        return None
    out_dir = layout.judge_dir(s.run_root)
    return judge_task(out_dir)(spec, baseline.results_uri, tuned.results_uri, test_path, out_dir,
                               comparison=compared.comparison)
