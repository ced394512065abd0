"""Report task: sftflow.reporting.step.write_run_report plus the report as a Prefect markdown artifact."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from sftflow.infra import storage
from sftflow.records import (ChampionDecision, ComparisonOutcome, Evaluation, Judgement, PreparedData, RunReport,
                             TunedModel)
from sftflow.cost.report import RunCost
from sftflow.reporting.links import for_prefect_ui
from sftflow.reporting.step import write_run_report


@task(name="report-run", cache_policy=NO_CACHE)
def report_run(run_root: str, settings: dict[str, Any], prepared: PreparedData, tuned_model: TunedModel,
               baseline: Evaluation, tuned: Evaluation, comparison: ComparisonOutcome,
               cost: RunCost | None = None, champion: ChampionDecision | None = None,
               judgement: Judgement | None = None, test_path: str | None = None) -> RunReport:
    """Write report.md and report.json (never cached: it is cheap and must name this run's files). The markdown
    artifact is report.md with each plot and file named by its full URI: the Prefect UI cannot resolve report.md's
    relative links nor show a local or gs:// image (sftflow.reporting.links.for_prefect_ui)."""
    report = write_run_report(run_root, settings, prepared, tuned_model, baseline, tuned, comparison, cost, champion,
                              judgement, test_path)
    if cost is not None:
        create_table_artifact(cost.rows(), key="run-cost", description="What this run cost (the report's Cost)")
    create_markdown_artifact(for_prefect_ui(storage.read_text(report.report_uri), run_root), key="sft-pipeline-report",
                             description="sftflow run report")
    return report
