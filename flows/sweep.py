"""Flow sweep: a hyperparameter grid tuned in parallel (at most `max_parallel` jobs at once), every
tuned model (and, optionally, checkpoint) evaluated on the base model's examples, a leaderboard with
paired CIs, and a champion that only a significantly better model replaces."""

from __future__ import annotations


from prefect import flow, get_run_logger

from flows.approval import approval_gate
from flows.common import settings_for
from flows.prepare_data import prepare_data
from sftflow.cost import estimate as cost
from sftflow.cost.approval import grid_approval_markdown
from sftflow.params import RunParams
from sftflow.records import PreparedData, SweepResult
from sftflow.evaluation.step import EvalSpec
from sftflow.selection.grid import GridError, SweepGrid, axes_of, check_grid_cap, expand_grid, models_to_evaluate
from sftflow.tuning.hyperparameters import Hyperparameters
from sftflow.tuning.plan import build_spec
from sftflow.tuning.setup import TuningSetup
from tasks.data import download
from tasks.champion import challenge_champion
from tasks.evaluation import evaluate_task
from tasks.sweep import (
    build_leaderboard,
    cancel_grid_jobs,
    committed_configurations,
    tune_configuration,
    write_sweep_report,
)
from tasks.tuning import check_datasets, estimate_tuning_cost


@flow(name="sweep", log_prints=True, persist_result=False, result_serializer="json")
def sweep(
    grid: SweepGrid = SweepGrid(),
    max_parallel: int = 2,
    evaluate_checkpoints: bool = False,
    promote: bool = True,
    config: RunParams = RunParams(),
) -> dict:
    """Tune every configuration of the grid, rank them against the base model, challenge the champion.

    A rerun attaches to the grid's running jobs or reuses finished ones (one job per intent). The
    cost cap (`max_tuning_cost_usd`), then approval above `approve_above_usd` (one decision for the grid),
    apply to the total of the grid's new jobs before any job is submitted.

    Args:
        grid: One comma list per tuning hyperparameter, e.g. {"epochs": "1,2", "adapter_size": "4,8"}; one left
            unset takes the run's value (config, its recipe, the environment or the default).
        max_parallel: Tuning jobs running at once (a Prefect global concurrency limit with a server).
        evaluate_checkpoints: Also evaluate and rank each job's per-epoch checkpoints.
        promote: Compare the best configuration with the champion and promote it on a significant win (the lower
            95% CI bound of (new − champion) ROUGE-L above config.promotion_margin).
        config: The run's parameters (data, model, evaluation, where it runs); each one left unset comes from
            the recipe, the environment or its default. A hyperparameter the grid lists is taken from the grid.
    """
    axes = axes_of(grid)
    expand_grid(axes)  # bad values: nothing done yet
    if not isinstance(max_parallel, int) or max_parallel < 1:
        raise GridError(f"--max-parallel: {max_parallel!r} must be a whole number >= 1")
    s = settings_for(config)
    s.require_bucket("sweep")
    points = expand_grid({**{k: [v] for k, v in Hyperparameters.from_settings(s).as_dict().items()}, **axes})
    log = get_run_logger()

    prepared = PreparedData.from_json(prepare_data(config=config))  # once for the whole grid
    train, val = prepared.train, prepared.val
    checked = check_datasets(s.work_dir, train, val)
    setup = TuningSetup.from_settings(s)
    setups = {p.label: setup.with_hyperparameters(p) for p in points}
    specs = {label: build_spec(ps, train, val) for label, ps in setups.items()}
    per_epochs = {p.epochs: setups[p.label] for p in reversed(points)}  # the price depends on epochs only
    by_epochs = {e: estimate_tuning_cost(per_epochs[e], checked) for e in sorted(per_epochs)}  # tokens counted once
    estimates = {p.label: by_epochs[p.epochs] for p in points}
    owed = check_grid_cap({k: cost.CostEstimate.from_dict(v) for k, v in estimates.items()},
                          committed_configurations(setup, specs), s.max_tuning_cost_usd)
    log.info("grid of %d configuration(s); new jobs estimated at %s in total (cap $%g)", len(points),
             cost.usd(owed.total_usd), s.max_tuning_cost_usd)
    passed = approval_gate(s, owed, grid_approval_markdown(owed, s.approve_above_usd, s.max_tuning_cost_usd, checked),
                           key="approve-grid")  # one decision for the grid's new jobs, before any is submitted
    log.info("approval: %s", passed)

    test_path = download(prepared.test, s.work_dir / "downloads")
    spec = EvalSpec.from_settings(s)
    base_future = evaluate_task(spec, "base").submit(spec, s.base_model, test_path, "base")  # once, while tuning runs
    futures = {p.label: tune_configuration.submit(setups[p.label], p.label, specs[p.label],
                                                  estimates[p.label], max_parallel) for p in points}
    try:
        tuned, failed = _outcomes(futures)
    except BaseException as exc:  # Ctrl-C, SIGTERM (a cancelled run): the task threads never see it
        if not isinstance(exc, Exception) and s.cancel_job_on_interrupt:
            cancel_grid_jobs(setup, list(specs.values()))
        raise

    models = models_to_evaluate(points, {k: t.to_json() for k, t in tuned.items()}, checkpoints=evaluate_checkpoints)
    evals = {m["label"]: evaluate_task(spec, m["label"]).submit(spec, m["model"], test_path, m["label"])
             for m in models}
    base = base_future.result()
    for m in models:
        ev = evals[m["label"]].result()
        m.update(results_uri=ev.results_uri, errors=list(ev.errors))

    grid_info = {**axes, "max_parallel": max_parallel, "failed": failed}
    lb = build_leaderboard(s, base, models, grid_info, test_path)  # promotion_metric judge: judged vs base too
    decision = challenge_champion(s, spec, test_path, lb.board["best_entry"], lb.board["best_reason"],
                                  s.promotion_margin) if promote else None
    report_uri = write_sweep_report(s, lb.board, lb.plot_uri, decision)
    return SweepResult(leaderboard_uri=lb.leaderboard_uri, plot_uri=lb.plot_uri, report_uri=report_uri,
                       best=lb.board["best"], best_reason=lb.board["best_reason"], entries=lb.board["entries"],
                       failed=failed, champion=decision).to_json()


def _outcomes(futures: dict) -> tuple[dict, dict]:
    """(tuned results by label, failures by label): one failed job does not stop the others."""
    tuned, failed = {}, {}
    for label, fut in futures.items():
        outcome = fut.result(raise_on_failure=False)
        if isinstance(outcome, BaseException):
            failed[label] = f"{type(outcome).__name__}: {outcome}"
            get_run_logger().error("%s: %s", label, failed[label])
        else:
            tuned[label] = outcome
    return tuned, failed
