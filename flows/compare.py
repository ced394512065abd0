"""Flow compare: paired baseline-vs-tuned comparison with CIs, a Wilcoxon test, plots and a report."""

from __future__ import annotations

from prefect import flow

from flows.common import settings_for
from sftflow.evaluation.compare import results_to_compare
from sftflow.infra import layout
from sftflow.params import RunParams
from tasks.evaluation import compare_task


@flow(name="compare", log_prints=True, persist_result=False, result_serializer="json")
def compare(baseline: str = "base", tuned: str = "tuned", config: RunParams = RunParams()) -> dict:
    """Paired comparison of two result sets over the examples both scored.

    Args:
        baseline: A result-set label of this run (e.g. 'base') or a results.jsonl URI.
        tuned: A result-set label of this run (e.g. 'tuned') or a results.jsonl URI.
        config: The run's parameters (run_name picks the run).
    """
    s = settings_for(config)
    b, t = results_to_compare(s.run_root, baseline, tuned)
    out_dir = layout.compare_dir(s.run_root)
    return compare_task(out_dir)(b, t, out_dir, seed=s.seed).to_json()
