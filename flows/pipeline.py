"""Flow sft_pipeline: prepare → (baseline evaluation while the tuning job trains) → evaluate tuned →
compare → challenge the champion → report. Every step is a subflow or task; every parameter comes from the
typed RunParams."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.common import check_infra_time_limit, settings_for
from flows.prepare_data import prepare_data
from flows.suspend import finish_before_suspending
from flows.tune import gate_tuning, tune
from sftflow.infra import layout
from sftflow.params import RunParams
from sftflow.records import PreparedData, TunedModel
from sftflow.cost.report import run_cost
from sftflow.evaluation.step import EvalSpec
from tasks.champion import challenge_with_tuned
from tasks.data import download
from tasks.evaluation import compare_task, evaluate_task
from tasks.judge import judge_tuned
from tasks.report import report_run


@flow(name="sft_pipeline", log_prints=True, persist_result=False, result_serializer="json")
def sft_pipeline(config: RunParams = RunParams()) -> dict:
    """Data in, a report out saying whether tuning helped; rerunning unchanged does no model call.

    Args:
        config: The run's parameters (data, model, hyperparameters, evaluation, where it runs); each
            one left unset comes from the recipe, the environment or its default.
    """
    s = settings_for(config)
    s.require_bucket("pipeline")
    check_infra_time_limit(s, "pipeline", evaluates=True)  # before anything is paid for
    log = get_run_logger()

    prepared = PreparedData.from_json(prepare_data(config=config))
    tuning_config = config.model_copy(update={"train_uri": prepared.train, "val_uri": prepared.val})
    test_path = download(prepared.test, s.work_dir / "downloads")
    log.info("cost gate: %s", gate_tuning(settings_for(tuning_config), test_path))  # before anything is paid
    spec = EvalSpec.from_settings(s)
    baseline_future = evaluate_task(spec, "base").submit(spec, s.base_model, test_path, "base")  # runs while tuning trains
    finish_before_suspending(baseline_future)  # wait_mode=suspend: cached before the run sleeps
    approved = tuning_config.model_copy(update={"approval_mode": "approved"})  # the gate above said yes
    tuned_model = TunedModel.from_json(tune(config=approved))
    baseline = baseline_future.result()
    tuned = evaluate_task(spec, "tuned")(spec, tuned_model.endpoint, test_path, "tuned")
    compared = compare_task(layout.compare_dir(s.run_root))(baseline.results_uri, tuned.results_uri,
                                                           layout.compare_dir(s.run_root), seed=s.seed)
    judged = judge_tuned(s, baseline, tuned, test_path, compared)  # pairwise judge, both orders (None: judge none)
    champion = challenge_with_tuned(s, spec, test_path, tuned_model, tuned, compared, judged)  # on a significant win
    evaluated = {"base": baseline, "tuned": tuned}
    spent = run_cost(s, tuned_model.to_json(), {label: ev.to_json() for label, ev in evaluated.items()},
                     batch=[label for label, ev in evaluated.items() if ev.mode == "batch"],  # billed at batch rate
                     judge=judged.cost if judged else None)
    report = report_run(s.run_root, s.public_dict(), prepared, tuned_model, baseline, tuned, compared, spent,
                        champion, judged, str(test_path))

    for line in report.verdict:
        log.info(line)
    log.info("report: %s", report.report_uri)
    for label, lines in report.errors.items():
        for line in lines:
            log.warning("%s: %s (not cached; a rerun asks these again)", label, line)
    return report.to_json()
