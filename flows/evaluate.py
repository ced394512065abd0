"""Flow evaluate: ROUGE of one model on the first N test examples, resumable, with artifacts."""

from __future__ import annotations

from prefect import flow

from flows.common import settings_for
from sftflow.infra import layout
from sftflow.params import RunParams
from sftflow.evaluation.step import EvalSpec, default_test_uri, resolve_model
from tasks.data import download
from tasks.evaluation import evaluate_task


@flow(name="evaluate", log_prints=True, persist_result=False, result_serializer="json")
def evaluate(
    model: str | None = None,
    label: str | None = None,
    config: RunParams = RunParams(),
) -> dict:
    """Evaluate `model` ('base', 'tuned', a model name or an endpoint) and store results as `label`.

    Args:
        model: 'base', 'tuned' (this run's tuned endpoint), a model name or an endpoint resource name.
        label: Name of the result set (1-63 lowercase letters, digits, '-' or '_'). None: 'base' or 'tuned'.
        config: The run's parameters; test_uri unset: what prepare_data uploaded for this run.
    """
    if label is not None:
        layout.check_name("label", label)  # before any download or request: a bad name costs nothing
    s = settings_for(config)
    resolved = resolve_model(s, model)
    if label is None:
        label = "tuned" if model == "tuned" or resolved != s.base_model else "base"
    test_path = download(default_test_uri(s), s.work_dir / "downloads")
    spec = EvalSpec.from_settings(s)
    return evaluate_task(spec, label)(spec, resolved, test_path, label).to_json()
