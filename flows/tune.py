"""Flow tune: one tuning job per intent, awaited by a polling task; the tuned endpoint comes out."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.approval import cost_gate
from flows.common import settings_for
from sftflow.cost import estimate as cost
from sftflow.infra import layout, storage
from sftflow.backends.base import TuningSpec
from sftflow.config import Settings
from sftflow.params import RunParams
from sftflow.records import PreparedData
from sftflow.tuning.report import data_warning, planned_job
from sftflow.tuning.step import dry_run_plan, save_tuned_model
from sftflow.tuning.intent import tuning_key
from tasks.tuning import (
    await_tuning_job,
    check_tuning_data,
    raise_on_data_problems,
    estimate_tuning_cost,
    read_tuning_record,
    record_tuned_model,
    submit_tuning_job,
)


def default_datasets(s: Settings) -> tuple[str, str | None]:
    """The datasets prepare_data produced for this run (an explicit --train/--val wins)."""
    if s.train_uri:
        return s.train_uri, s.val_uri
    uri = layout.prepared_uri(s.run_root)
    prepared = PreparedData.read_if_exists(uri)
    if prepared is None:
        raise FileNotFoundError(f"{uri}: no prepared data for run '{s.run_name}'; run `sftflow prepare` or pass --train")
    return prepared.train, s.val_uri or prepared.val


def check_datasets(s: Settings, train_uri: str, val_uri: str | None) -> list[tuple[str, str, dict]]:
    """Gemini's rules on what will be submitted; DataError (`URI:line: field: problem`) on any problem.
    Returns [(role, URI, check summary)] for the estimate."""
    checked = {train_uri: check_tuning_data(train_uri, "train", s.work_dir / "checks")}
    if val_uri:
        checked[val_uri] = check_tuning_data(val_uri, "val", s.work_dir / "checks")
    raise_on_data_problems(checked)
    return [(summary["kind"], uri, summary) for uri, summary in checked.items()]


def build_spec(s: Settings, train_uri: str, val_uri: str | None) -> TuningSpec:
    # Content only (md5), not an object's generation: re-uploading identical bytes is the same intent.
    hashes = {"train": storage.md5(train_uri) or storage.fingerprint(train_uri)}
    if val_uri:
        hashes["val"] = storage.md5(val_uri) or storage.fingerprint(val_uri)
    fields = dict(
        base_model=s.base_model,
        epochs=s.epochs,
        adapter_size=s.adapter_size,
        learning_rate_multiplier=s.learning_rate_multiplier,
        display_name=s.tuned_model_display_name,
    )
    key = tuning_key(hashes, run_name=s.run_name, seed=s.seed, **fields)
    return TuningSpec(train_uri=train_uri, val_uri=val_uri, key=key, seed=s.seed,
                      budget_s=s.local_train_budget_s, **fields)


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
    log = get_run_logger()
    spec, estimate, checked = plan_tuning(s)
    if dry_run:
        plan = dry_run_plan(spec, estimate, backend=s.backend, cap_usd=s.max_tuning_cost_usd,
                            storage_root=s.storage_root) | {"approve_above_usd": s.approve_above_usd}
        log.info("dry run: estimate %s (%s the $%g cap); nothing submitted",
                 cost.CostEstimate.from_dict(estimate).summary(), "within" if plan["within_cap"] else "OVER",
                 s.max_tuning_cost_usd)
        return plan
    record = read_tuning_record(s, spec.key)
    if record is None:
        cost_gate(s, spec, estimate, checked, planned_job(spec, s.backend))  # cap, then approval
        job = submit_tuning_job(s, spec, estimate)
        print(f"tuning job: {job['name']}" + (" (attached)" if job["attached"] else " (submitted)"))
        record = record_tuned_model(s, spec, await_tuning_job(s, job["name"]))
    tuned = save_tuned_model(s.run_root, spec.key, record, estimate)
    if (billable := tuned.stats.get("billable_tokens")) is not None:  # what the bill is computed from
        log.info("the job reports %s billable tokens; the estimate was %s", f"{int(billable):,}",
                 cost.CostEstimate.from_dict(estimate).summary())
    if warning := data_warning(tuned.stats):  # Vertex truncated or dropped examples: say so where it is seen
        log.warning(warning)
        print(warning)
    log.info("tuned model %s, endpoint %s", tuned.tuned_model, tuned.endpoint)
    return tuned.to_json()


def plan_tuning(s: Settings) -> tuple[TuningSpec, dict, list[tuple[str, str, dict]]]:
    """The job this run would submit and its estimate: datasets checked (nothing is submitted
    unvalidated), tokens counted, priced. Returns (spec, estimate, [(role, URI, check summary)])."""
    train, val = default_datasets(s)
    checked = check_datasets(s, train, val)
    spec = build_spec(s, train, val)
    return spec, estimate_tuning_cost(s, checked), checked


def gate_tuning(s: Settings) -> str:
    """The cost gates of a run's tuning step, run early (the pipeline: before its baseline evaluation
    spends anything); nothing to gate when this intent already finished."""
    spec, estimate, checked = plan_tuning(s)
    if read_tuning_record(s, spec.key) is not None:
        return "already tuned"
    return cost_gate(s, spec, estimate, checked, planned_job(spec, s.backend))
