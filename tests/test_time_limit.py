"""The run-time check that the infrastructure's time limit (infra_timeout_s, SFTFLOW_INFRA_TIMEOUT_S, set by the gcp
deployment's job variables) covers what a run needs: sftflow/infra/time_limit.py, and where the flows call it."""

from __future__ import annotations

import pytest

from sftflow.errors import ConfigError
from sftflow.infra.time_limit import OTHER_WORK_S, check_time_limit, run_needs

H = 3600.0


def test_a_polling_pipeline_needs_the_tuning_wait_the_batch_queue_and_the_rest():
    need, how = run_needs(wait_mode="poll", tuning_timeout=4 * H, batch_pending_timeout=2 * H)
    assert need == 4 * H + 2 * H + OTHER_WORK_S
    assert how.startswith("tuning_timeout 14400 s + batch_pending_timeout 7200 s")
    # the tune flow evaluates nothing after its job
    assert run_needs(wait_mode="poll", tuning_timeout=4 * H, batch_pending_timeout=2 * H, evaluates=False)[0] == 5 * H


def test_a_suspending_run_needs_only_the_work_between_suspensions():
    need, how = run_needs(wait_mode="suspend", tuning_timeout=48 * H, batch_pending_timeout=2 * H)
    assert need == 2 * H + OTHER_WORK_S and "sleeps while the job trains" in how


def test_a_raised_tuning_timeout_fails_in_one_line_naming_both_numbers():
    check_time_limit("pipeline", 12 * H, wait_mode="poll", tuning_timeout=4 * H, batch_pending_timeout=2 * H)  # fits
    check_time_limit("pipeline", None, wait_mode="poll", tuning_timeout=99 * H, batch_pending_timeout=2 * H)  # unknown
    with pytest.raises(ConfigError) as exc:
        check_time_limit("pipeline", 12 * H, wait_mode="poll", tuning_timeout=10 * H, batch_pending_timeout=2 * H)
    line = str(exc.value)
    assert "\n" not in line and "after 43200 s" in line and "needs 46800 s" in line and "tuning_timeout 36000 s" in line
    assert "SFTFLOW_INFRA_TIMEOUT_S" in line
    # the same run suspending while the job trains fits
    check_time_limit("pipeline", 12 * H, wait_mode="suspend", tuning_timeout=10 * H, batch_pending_timeout=2 * H)


@pytest.mark.parametrize("flow_name", ["pipeline", "tune"])
def test_the_flows_check_before_anything_else(flow_name, monkeypatch, tmp_path):
    """The environment variable the gcp job sets reaches the check: the flow fails at its first lines, before any
    request (the bucket below does not exist, and no Prefect run context is needed to get there)."""
    from flows.pipeline import sft_pipeline
    from flows.tune import tune
    from sftflow.params import RunParams

    monkeypatch.setenv("SFTFLOW_INFRA_TIMEOUT_S", "7200")
    config = RunParams(bucket="gs://no-such-bucket-for-this-test", local_root=str(tmp_path), tuning_timeout=4 * H)
    fn = sft_pipeline.fn if flow_name == "pipeline" else tune.fn
    with pytest.raises(ConfigError, match=rf"^{flow_name}: the infrastructure stops this run after 7200 s"):
        fn(config=config)
