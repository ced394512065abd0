"""Flow compare: paired baseline-vs-tuned comparison with CIs, a Wilcoxon test, plots and a report."""

from __future__ import annotations

from prefect import flow

from flows.common import settings_for
from sftflow.infra import layout, storage
from sftflow.params import RunParams
from tasks.evaluation import compare_task


def results_uri(run_root: str, ref: str) -> str:
    """A label of this run ('base', 'tuned', ...) or a results.jsonl URI/path as given."""
    if ref.endswith(".jsonl"):
        return ref
    return storage.join(layout.eval_dir(run_root, ref), "results.jsonl")


@flow(name="compare", log_prints=True, persist_result=False, result_serializer="json")
def compare(baseline: str = "base", tuned: str = "tuned", config: RunParams = RunParams()) -> dict:
    """Paired comparison of two result sets over the examples both scored.

    Args:
        baseline: A result-set label of this run (e.g. 'base') or a results.jsonl URI.
        tuned: A result-set label of this run (e.g. 'tuned') or a results.jsonl URI.
        config: The run's parameters (run_name picks the run).
    """
    s = settings_for(config)
    b, t = results_uri(s.run_root, baseline), results_uri(s.run_root, tuned)
    for uri in (b, t):
        if not storage.exists(uri):
            raise FileNotFoundError(f"{uri}: no results; run `sftflow evaluate` first")
    out_dir = layout.compare_dir(s.run_root)
    return compare_task(out_dir)(b, t, out_dir, seed=s.seed).to_json()
