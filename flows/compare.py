"""Flow compare: paired baseline-vs-tuned comparison with CIs, a Wilcoxon test, plots and a report (with `judge`,
also the pairwise judge); flow judge: the pairwise judge alone."""

from __future__ import annotations

from prefect import flow

from flows.common import settings_for
from sftflow.evaluation.compare import results_to_compare
from sftflow.evaluation.step import default_test_uri
from sftflow.infra import layout
from sftflow.judging.step import JudgeSpec
from sftflow.params import RunParams
from tasks.data import download
from tasks.evaluation import compare_task
from tasks.judge import judge_task


def _judged(s, baseline_uri: str, candidate_uri: str, comparison: dict | None = None) -> dict:
    """The pairwise judge of two result sets (judge 'none' → the backend's, since a judge was asked for)."""
    spec = JudgeSpec.from_settings(s if s.judge != "none" else s.model_copy(update={"judge": "auto"}))
    test_path = download(default_test_uri(s), s.work_dir / "downloads")
    out_dir = layout.judge_dir(s.run_root)
    return judge_task(out_dir)(spec, baseline_uri, candidate_uri, test_path, out_dir, comparison=comparison).to_json()


@flow(name="compare", log_prints=True, persist_result=False, result_serializer="json")
def compare(baseline: str = "base", tuned: str = "tuned", config: RunParams = RunParams(), judge: bool = False) -> dict:
    """Paired comparison of two result sets over the examples both scored.

    Args:
        baseline: A result-set label of this run (e.g. 'base') or a results.jsonl URI.
        tuned: A result-set label of this run (e.g. 'tuned') or a results.jsonl URI.
        config: The run's parameters (run_name picks the run).
        judge: Also judge the pairs with the pairwise judge (setting `judge`; 'none' → the backend's).
    """
    s = settings_for(config)
    b, t = results_to_compare(s.run_root, baseline, tuned)
    out_dir = layout.compare_dir(s.run_root)
    out = compare_task(out_dir)(b, t, out_dir, seed=s.seed).to_json()
    if judge:
        out["judgement"] = _judged(s, b, t, out["comparison"])
    return out


@flow(name="judge", log_prints=True, persist_result=False, result_serializer="json")
def judge_pairs(baseline: str = "base", candidate: str = "tuned", config: RunParams = RunParams()) -> dict:
    """Pairwise judge of two result sets (each pair asked in both orders), with win rate, CI and report.

    Args:
        baseline: A result-set label of this run (e.g. 'base') or a results.jsonl URI.
        candidate: A result-set label of this run (e.g. 'tuned') or a results.jsonl URI.
        config: The run's parameters (judge, judge_samples, judge_model; test_uri: the set both answered).
    """
    s = settings_for(config)
    return _judged(s, *results_to_compare(s.run_root, baseline, candidate))
