"""Flow sweep: a hyperparameter grid tuned in parallel (at most `max_parallel` jobs at once), every
tuned model (and, optionally, checkpoint) evaluated on the base model's examples, a leaderboard with
paired CIs, and a champion that only a significantly better model replaces."""

from __future__ import annotations


from prefect import flow, get_run_logger

from flows.approval import approval_gate
from flows.common import settings_for
from flows.prepare_data import prepare_data
from flows.tune import build_spec, check_datasets
from sftflow import champion, cost
from sftflow.approval import grid_approval_markdown
from sftflow.params import RunParams
from sftflow.records import ChampionDecision, PreparedData, SweepResult
from sftflow.steps.evaluate import EvalSpec
from sftflow.sweep import GridError, check_grid_cap, expand_grid, models_to_evaluate
from tasks.data import download
from tasks.evaluation import evaluate_task
from tasks.sweep import (
    build_leaderboard,
    cancel_grid_jobs,
    challenge_champion,
    committed_configurations,
    read_champion,
    tune_configuration,
    write_sweep_report,
)
from tasks.tuning import estimate_tuning_cost

CHAMPION_RETRIES = 3


@flow(name="sweep", log_prints=True, persist_result=False, result_serializer="json")
def sweep(
    epochs: str = "1",
    adapter_size: str = "4",
    learning_rate_multiplier: str = "1",
    max_parallel: int = 2,
    evaluate_checkpoints: bool = False,
    promote: bool = True,
    promotion_margin: float = 0.0,
    config: RunParams = RunParams(),
) -> dict:
    """Tune every configuration of the grid, rank them against the base model, challenge the champion.

    A rerun attaches to the grid's running jobs or reuses finished ones (one job per intent). The
    cost cap (`max_tuning_cost_usd`), then approval above `approve_above_usd` (one decision for the grid),
    apply to the total of the grid's new jobs before any job is submitted.

    Args:
        epochs: Comma list of epoch counts, e.g. "1,2".
        adapter_size: Comma list of adapter sizes (1, 2, 4, 8, 16), e.g. "4,8".
        learning_rate_multiplier: Comma list of learning-rate multipliers, e.g. "0.5,1".
        max_parallel: Tuning jobs running at once (a Prefect global concurrency limit with a server).
        evaluate_checkpoints: Also evaluate and rank each job's per-epoch checkpoints.
        promote: Compare the best configuration with the champion and promote it on a significant win.
        promotion_margin: Promote only if the lower 95% CI bound of (new − champion) ROUGE-L is above this.
        config: The run's parameters (data, model, evaluation, where it runs); each one left unset comes from
            the recipe, the environment or its default. Its epochs / adapter_size / learning_rate_multiplier
            are not used: the grid's lists above are.
    """
    grid = expand_grid(epochs, adapter_size, learning_rate_multiplier)  # bad values: nothing done yet
    if not isinstance(max_parallel, int) or max_parallel < 1:
        raise GridError(f"--max-parallel: {max_parallel!r} must be a whole number >= 1")
    s = settings_for(config)
    s.require_bucket("sweep")
    log = get_run_logger()

    prepared = PreparedData.from_json(prepare_data(config=config))  # once for the whole grid
    train, val = prepared.train, prepared.val
    checked = check_datasets(s, train, val)
    point_settings = {p.label: s.model_copy(update=p.hyperparameters()) for p in grid}
    specs = {label: build_spec(ps, train, val) for label, ps in point_settings.items()}
    by_epochs = {e: estimate_tuning_cost(s.model_copy(update={"epochs": e}), checked)  # tokens counted once
                 for e in sorted({p.epochs for p in grid})}
    estimates = {p.label: by_epochs[p.epochs] for p in grid}
    owed = check_grid_cap({k: cost.CostEstimate.from_dict(v) for k, v in estimates.items()},
                          committed_configurations(s, specs), s.max_tuning_cost_usd)
    log.info("grid of %d configuration(s); new jobs estimated at %s in total (cap $%g)", len(grid),
             cost.usd(owed.total_usd), s.max_tuning_cost_usd)
    passed = approval_gate(s, owed, grid_approval_markdown(owed, s.approve_above_usd, s.max_tuning_cost_usd, checked),
                           key="approve-grid")  # one decision for the grid's new jobs, before any is submitted
    log.info("approval: %s", passed)

    test_path = download(prepared.test, s.work_dir / "downloads")
    spec = EvalSpec.from_settings(s)
    base_future = evaluate_task(spec, "base").submit(spec, s.base_model, test_path, "base")  # once, while tuning runs
    futures = {p.label: tune_configuration.submit(point_settings[p.label], p.label, specs[p.label],
                                                  estimates[p.label], max_parallel) for p in grid}
    try:
        tuned, failed = _outcomes(futures)
    except BaseException as exc:  # Ctrl-C, SIGTERM (a cancelled run): the task threads never see it
        if not isinstance(exc, Exception) and s.cancel_job_on_interrupt:
            cancel_grid_jobs(s, list(specs.values()))
        raise

    models = models_to_evaluate(grid, {k: t.to_json() for k, t in tuned.items()}, checkpoints=evaluate_checkpoints)
    evals = {m["label"]: evaluate_task(spec, m["label"]).submit(spec, m["model"], test_path, m["label"])
             for m in models}
    base = base_future.result()
    for m in models:
        ev = evals[m["label"]].result()
        m.update(results_uri=ev.results_uri, errors=list(ev.errors))

    grid_info = {"epochs": epochs, "adapter_size": adapter_size, "learning_rate_multiplier": learning_rate_multiplier,
                 "max_parallel": max_parallel, "failed": failed}
    lb = build_leaderboard(s, base, models, grid_info)
    decision = _challenge(s, spec, lb.board, test_path, promotion_margin) if promote else None
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


def _challenge(s, spec: EvalSpec, board: dict, test_path: str, margin: float) -> ChampionDecision:
    """The best configuration against the champion, evaluated now on the same examples."""
    if board["best_entry"] is None:
        return ChampionDecision(promoted=False, reason=f"no candidate: {board['best_reason']}")
    for _ in range(CHAMPION_RETRIES):
        current = read_champion(s)
        if current is not None and current["model"].get("endpoint") == board["best_entry"]["endpoint"]:
            return ChampionDecision(promoted=False, reason=f"{board['best']} is already the champion "
                                                           f"(#{current['seq']})", seq=current["seq"])
        champion_eval = None
        if current is not None:
            champion_eval = evaluate_task(spec, "champion")(spec, current["model"]["endpoint"], test_path, "champion")
        try:
            return challenge_champion(s, board, champion_eval, current, margin)
        except champion.ChampionChanged as exc:
            get_run_logger().warning("%s", exc)
    raise champion.ChampionChanged(f"the champion kept changing during {CHAMPION_RETRIES} comparisons; rerun")

