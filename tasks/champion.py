"""Champion task: a sweep's best or the pipeline's tuned model challenges the champion (sftflow.selection.challenge);
the champion's answers come from the cached evaluate task (its key: EvalSpec, endpoint, test set, label)."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from sftflow.backends import make_tuner
from sftflow.config import Settings
from sftflow.errors import ConfigError
from sftflow.infra import layout
from sftflow.judging.step import JudgeSpec, judge_and_save
from sftflow.records import ChampionDecision, ComparisonOutcome, Evaluation, Judgement, TunedModel
from sftflow.selection.champion_report import decision_lines
from sftflow.selection import challenge as steps
from sftflow.evaluation.step import EvalSpec
from sftflow.tuning.hyperparameters import Hyperparameters
from tasks.evaluation import evaluate_task

@task(name="challenge-champion", cache_policy=NO_CACHE)
def challenge_champion(settings: Settings, spec: EvalSpec, test_path: str, candidate: dict[str, Any] | None,
                       why_none: str, margin: float) -> ChampionDecision:
    """sftflow.selection.challenge.challenge with this backend's tuner (Vertex: the registry alias moves). Never cached:
    the history decides whether anything is left to do."""

    def evaluate(model: str, label: str) -> Evaluation:
        return evaluate_task(spec, label)(spec, model, test_path, label)

    decision = steps.challenge(settings.storage_root, settings.run_name, candidate, why_none, evaluate=evaluate,
                               tuner=make_tuner(settings), margin=margin, seed=settings.seed,
                               judge=judge_fn(settings, test_path, "champion"))
    for line in decision_lines(decision.to_json()):
        get_run_logger().info(line)
    return decision


def judge_fn(settings: Settings, test_path: str, name: str):
    """promotion_metric 'judge': (baseline results URI, candidate results URI) -> the judge's summary, judged into
    runs/<run>/judge/<name>/ (checkpointed: a rerun asks no pair again); None otherwise."""
    if settings.promotion_metric != "judge":
        return None
    spec = JudgeSpec.from_settings(settings)
    if spec is None:
        raise ConfigError("promotion_metric: 'judge' needs a judge, but judge is 'none'")

    def judge(baseline_uri: str, candidate_uri: str) -> dict[str, Any]:
        out_dir = layout.child(layout.judge_dir(settings.run_root), name)
        return judge_and_save(spec, baseline_uri, candidate_uri, test_path, out_dir).summary

    return judge


def challenge_with_tuned(settings: Settings, spec: EvalSpec, test_path: str, tuned_model: TunedModel,
                         tuned: Evaluation, compared: ComparisonOutcome,
                         judged: Judgement | None = None) -> ChampionDecision:
    """The pipeline's tuned model as the challenger, if it beats the base model significantly (on ROUGE-L, or by
    the judge with promotion_metric 'judge')."""
    if settings.promotion_metric == "judge" and judged is None:
        raise ConfigError("promotion_metric: 'judge' needs a judge, but judge is 'none'")
    candidate, why = steps.pipeline_candidate(settings.run_name, Hyperparameters.from_settings(settings).as_dict(),
                                              tuned_model, tuned, compared.comparison,
                                              judged.summary if judged else None, settings.promotion_metric)
    return challenge_champion(settings, spec, test_path, candidate, why, settings.promotion_margin)
