"""Step: the run report — report.json (data) and report.md (markdown) in the run's folder."""

from __future__ import annotations

import json
import logging
from typing import Any

from sftflow.cost.report import RunCost
from sftflow.data.testset import read_test_csv, split_prompt
from sftflow.errors import DataError
from sftflow.evaluation.results import read_results
from sftflow.infra import layout, storage
from sftflow.records import (ChampionDecision, ComparisonOutcome, Evaluation, Judgement, PreparedData, RunReport,
                             TunedModel)
from sftflow.reporting import examples
from sftflow.reporting.run import build_report, render_markdown
from sftflow.selection.champion_report import decision_markdown

log = logging.getLogger(__name__)


def articles_by_id(test_path: str | None, prepared: PreparedData) -> dict[str, str] | None:
    """Each test example's article (its prompt without the instruction), by id: from `test_path` (the local copy
    the run evaluated), else the prepared test set when it is a local file; None when neither can be read."""
    path = test_path or (prepared.test if not storage.is_gcs(prepared.test) and storage.exists(prepared.test)
                         else None)
    if path is None:
        return None
    try:
        return {ex.id: split_prompt(ex.input_text)[1] for ex in read_test_csv(path)}
    except (OSError, DataError) as exc:  # the report still tells the verdict, without the articles
        log.warning("%s: articles not shown in the report's examples (%s)", path, exc)
        return None


def write_run_report(run_root: str, settings: dict[str, Any], prepared: PreparedData, tuned_model: TunedModel,
                     baseline: Evaluation, tuned: Evaluation, comparison: ComparisonOutcome,
                     cost: RunCost | None = None, champion: ChampionDecision | None = None,
                     judgement: Judgement | None = None, test_path: str | None = None) -> RunReport:
    """Write report.md and report.json; `settings` is Settings.public_dict() (no secrets); `cost`, when
    given, adds the "Cost" section and report.json's `cost`; `champion`, the tuned model's challenge of the
    champion, the "Champion" section (promoted, or why not) and report.json's `champion`; `test_path`, the test set
    the run evaluated (a local file), the articles of the example pairs."""
    pairs = examples.choose(read_results(baseline.results_uri), read_results(tuned.results_uri),
                            articles_by_id(test_path, prepared))
    loss = layout.loss_plot_uri(run_root)
    data = build_report(settings=settings, prepared=prepared, tuning=tuned_model, comparison=comparison,
                        evaluations={"base": baseline, "tuned": tuned}, example_pairs=pairs,
                        loss_plot=loss if storage.exists(loss) else None, judgement=judgement)
    md = render_markdown(data, run_root)
    if cost is not None:
        data["cost"] = cost.to_dict()
        md += "\n" + cost.markdown()
    if champion is not None:
        data["champion"] = champion.to_json()
        md += decision_markdown(data["champion"], level=2)
    report_uri = storage.write_text(storage.join(run_root, "report.md"), md, "text/markdown")
    json_uri = storage.write_text(storage.join(run_root, "report.json"), json.dumps(data, indent=2),
                                  "application/json")
    errors = {ev.label: ev.errors for ev in (baseline, tuned) if ev.errors}
    if judgement is not None and judgement.errors:
        errors["judge"] = judgement.errors
    # the judge's line first: the ROUGE-L verdict stays the last line before the champion's (README, CLI)
    verdict = ((judgement.verdict,) if judgement is not None else ()) + comparison.verdict
    return RunReport(report_uri=report_uri, report_json_uri=json_uri, verdict=verdict,
                     comparison=comparison.comparison, errors=errors, champion=champion, judgement=judgement)
