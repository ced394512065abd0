"""Flow cleanup: delete what a run created — and nothing else (see sftflow.cleanup.plan for the scope)."""

from __future__ import annotations

import functools

from prefect import flow, get_run_logger

from flows.common import settings_for
from sftflow.backends import make_tuner
from sftflow.cleanup.plan import execute, plan_cleanup, summary
from sftflow.params import RunParams


@flow(name="cleanup", log_prints=True, persist_result=False, result_serializer="json")
def cleanup(yes: bool = False, include_datasets: bool = False, include_champion: bool = False,
            config: RunParams = RunParams()) -> dict:
    """List (default) or, with yes=True, delete: objects under runs/<run>/, the run's tuning records
    and the tuned models/endpoints they name; sftflow's own datasets too with include_datasets.
    Anything else is left and listed under "skipped" with the reason; so is the current champion's
    tuned model/endpoint ("kept: champion") unless include_champion.

    Args:
        yes: Really delete; otherwise only list.
        include_datasets: Also the uploaded datasets (shared by runs with the same data).
        include_champion: Also the tuned model/endpoint that is the current champion; the champion is
            then recorded as retired (none until the next promotion).
        config: The run's parameters (run_name picks the run).
    """
    s = settings_for(config)
    log = get_run_logger()
    get_tuner = functools.cache(lambda: make_tuner(s))  # made only if the run has a tuning record
    plan = plan_cleanup(s, get_tuner, include_datasets=include_datasets, include_champion=include_champion)
    for item in plan.skipped:
        log.warning("left %s (%s)", item.uri, item.reason)
    if yes:
        execute(plan, get_tuner, run_root=s.run_root)
        log.info("deleted %d item(s)", len(plan.delete))
    else:
        log.info("would delete %d item(s); pass yes=True (--yes) to delete", len(plan.delete))
    return summary(plan, deleted=yes)
