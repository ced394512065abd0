"""Flow tune: one tuning job per intent, awaited by a polling task; the tuned endpoint comes out."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.approval import cost_gate
from flows.common import check_infra_time_limit, settings_for
from flows.suspend import suspend_while_training
from sftflow.backends import make_tuner
from sftflow.cost import estimate as cost
from sftflow.backends.base import TuningSpec
from sftflow.config import Settings
from sftflow.params import RunParams
from sftflow.judging.step import JudgeSpec, estimate_note
from sftflow.tuning.plan import build_spec, default_datasets
from sftflow.tuning.report import data_warning
from sftflow.tuning.setup import TuningSetup
from sftflow.tuning.step import dry_run_plan, save_tuned_model
from tasks.tuning import (
    await_tuning_job,
    check_datasets,
    estimate_tuning_cost,
    read_tuning_record,
    record_tuned_model,
    submit_tuning_job,
)


@flow(name="tune", log_prints=True, persist_result=False, result_serializer="json")
def tune(dry_run: bool = False, config: RunParams = RunParams()) -> dict:
    """Tune the base model on the prepared data and return the tuned model and endpoint.

    A rerun with the same intent returns the recorded result (no API call) or attaches to the
    job still running; only `resubmit_failed` submits again after a failure. A new job is
    submitted only if its estimated cost is within `max_tuning_cost_usd` and, above
    `approve_above_usd`, once approved (the run pauses for it in the UI); when `tuning_timeout`
    runs out the job is cancelled (`cancel_job_on_timeout`).

    Args:
        dry_run: Estimate the cost and return the job that would be submitted; call no tuning API.
        config: The run's parameters; train_uri / val_uri unset: prepare_data's output for this run.
    """
    s = settings_for(config)
    s.require_bucket("tune")
    check_infra_time_limit(s, "tune", evaluates=False)
    log = get_run_logger()
    setup = TuningSetup.from_settings(s)
    spec, estimate, checked = plan_tuning(s, setup)
    if dry_run:
        plan = dry_run_plan(spec, make_tuner(setup).request(spec), estimate, backend=s.backend,
                            cap_usd=s.max_tuning_cost_usd, storage_root=s.storage_root) | {
                                "approve_above_usd": s.approve_above_usd}
        log.info("dry run: estimate %s (%s the $%g cap); nothing submitted",
                 cost.CostEstimate.from_dict(estimate).summary(), "within" if plan["within_cap"] else "OVER",
                 s.max_tuning_cost_usd)
        return plan
    record = read_tuning_record(setup, spec.key)
    if record is None:
        cost_gate(s, spec, estimate, checked, make_tuner(setup).request(spec))  # cap, then approval
        job = submit_tuning_job(setup, spec, estimate)
        print(f"tuning job: {job['name']}" + (" (attached)" if job["attached"] else " (submitted)"))
        waited = suspend_while_training(s, spec.key, job["name"], job["state"])  # wait_mode=suspend: the run sleeps
        record = record_tuned_model(setup, spec, await_tuning_job(setup, job["name"], waited))
    tuned = save_tuned_model(s.run_root, spec.key, record, estimate)
    if (billable := tuned.stats.get("billable_tokens")) is not None:  # what the bill is computed from
        log.info("the job reports %s billable tokens; the estimate was %s", f"{int(billable):,}",
                 cost.CostEstimate.from_dict(estimate).summary())
    if warning := data_warning(tuned.stats):  # Vertex truncated or dropped examples: say so where it is seen
        log.warning(warning)
        print(warning)
    log.info("tuned model %s, endpoint %s", tuned.tuned_model, tuned.endpoint)
    return tuned.to_json()


def plan_tuning(s: Settings, setup: TuningSetup) -> tuple[TuningSpec, dict, list[tuple[str, str, dict]]]:
    """The job this run would submit and its estimate: datasets checked (nothing is submitted
    unvalidated), tokens counted, priced. Returns (spec, estimate, [(role, URI, check summary)])."""
    train, val = default_datasets(s)
    checked = check_datasets(s.work_dir, train, val)
    spec = build_spec(setup, train, val)
    return spec, estimate_tuning_cost(setup, checked), checked


def gate_tuning(s: Settings, test_path: str | None = None) -> str:
    """The cost gates of a run's tuning step, run early (the pipeline: before its baseline evaluation
    spends anything); nothing to gate when this intent already finished. With `test_path` (the pipeline), the
    estimate also names what the pairwise judge will cost (a note: the cap is the tuning job's)."""
    setup = TuningSetup.from_settings(s)
    spec, estimate, checked = plan_tuning(s, setup)
    if test_path is not None and (note := estimate_note(JudgeSpec.from_settings(s), test_path)):
        estimate = {**estimate, "notes": [*estimate.get("notes", []), note]}
    if read_tuning_record(setup, spec.key) is not None:
        return "already tuned"
    return cost_gate(s, spec, estimate, checked, make_tuner(setup).request(spec))
