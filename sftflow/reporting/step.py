"""Step: the run report — report.json (data) and report.md (markdown) in the run's folder."""

from __future__ import annotations

import json
from typing import Any

from sftflow.infra import storage
from sftflow.judging import report as judge_report
from sftflow.records import (ChampionDecision, ComparisonOutcome, Evaluation, Judgement, PreparedData, RunReport,
                             TunedModel)
from sftflow.selection.champion_report import decision_markdown
from sftflow.cost.report import RunCost
from sftflow.reporting.run import build_report, render_markdown


def write_run_report(run_root: str, settings: dict[str, Any], prepared: PreparedData, tuned_model: TunedModel,
                     baseline: Evaluation, tuned: Evaluation, comparison: ComparisonOutcome,
                     cost: RunCost | None = None, champion: ChampionDecision | None = None,
                     judgement: Judgement | None = None) -> RunReport:
    """Write report.md and report.json; `settings` is Settings.public_dict() (no secrets); `cost`, when
    given, adds the "Cost" section and report.json's `cost`; `champion`, the tuned model's challenge of the
    champion, the "Champion" section (promoted, or why not) and report.json's `champion`."""
    data = build_report(settings=settings, prepared=prepared, tuning=tuned_model, comparison=comparison,
                        evaluations={"base": baseline, "tuned": tuned})
    md = render_markdown(data)
    if judgement is not None:  # the judge's section: win rate and CI, order disagreement, agreement with ROUGE-L
        data["judge"] = judgement.to_json()
        data["plots"]["judge win/tie/loss"] = judgement.plot_uri
        md += "\n" + judge_report.markdown(judgement.summary, judgement.label, list(judgement.disagreements),
                                           judgement.cost) + f"\nPlot: `{judgement.plot_uri}`\n"
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
