"""Cost control: the pre-submission estimate, the hard cap, and cancelling a job on timeout.

Unit tests (fast) drive the domain functions directly; the flow/CLI tests (slow) run the real
google-genai client against the Vertex-shaped server and count its requests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sftflow.backends.base import JobState, JobStatus, TuningSpec
from sftflow.tuning.hyperparameters import Hyperparameters
from sftflow.cost.estimate import (
    ESTIMATE_METHOD,
    LOCAL_METHOD,
    CostCapExceeded,
    CostEstimate,
    FileTokens,
    check_cap,
    estimate_tuning_cost,
    refusal_message,
    training_usd,
)
from sftflow.errors import BackendError, TransientError
from sftflow.tuning.polling import JobTimeout, await_job
from sftflow.tuning.intent import ensure_job
from tests.servers.vertex_fixtures import flow_config, upload_datasets

pytestmark = pytest.mark.usefixtures("token_in_env")


def spec(key: str) -> TuningSpec:
    return TuningSpec("gemini-2.5-flash", "gs://b/train.jsonl", None, Hyperparameters(1, 4, 1.0), "tuned", key)


class FakeClock:
    """Sleep that advances a clock instead of waiting."""

    def __init__(self):
        self.now = 0.0

    def sleep(self, s: float) -> None:
        self.now += s

    def __call__(self) -> float:
        return self.now


def _example(user: str, model: str) -> str:
    return json.dumps({"contents": [{"role": "user", "parts": [{"text": user}]},
                                    {"role": "model", "parts": [{"text": model}]}]})


# ------------------------------------------------------------------------------ the estimate


def test_estimate_is_training_tokens_times_epochs_times_price_validation_not_billed():
    files = [FileTokens("train", "t", 1000, 2_000_000), FileTokens("val", "v", 100, 500_000, billed=False)]
    est = estimate_tuning_cost(files, epochs=3, price_per_million=5.0)
    assert est.billed_tokens == 6_000_000
    assert est.total_usd == pytest.approx(30.0)
    assert est.method == ESTIMATE_METHOD
    assert [r["tokens x epochs"] for r in est.rows()] == [6_000_000, "not billed"]
    assert [r["usd"] for r in est.rows()] == [30.0, 0.0]
    assert any("validation tokens" in n for n in est.notes)
    # The record survives JSON (it travels between tasks and into the report).
    again = CostEstimate.from_dict(json.loads(json.dumps(est.to_dict())))
    assert again == est and again.to_dict()["total_usd"] == pytest.approx(30.0)


def test_local_estimate_is_labelled_and_priced_like_vertex():
    est = estimate_tuning_cost([FileTokens("train", "t", 10, 1_000_000)], epochs=2, price_per_million=5.0,
                               backend="local")
    assert est.method == LOCAL_METHOD and "local backend" in est.method
    assert est.total_usd == pytest.approx(10.0)
    text = "\n".join(est.lines())
    assert "price: $5 per 1M training tokens" in text and "https://cloud.google.com/" in text


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(price_per_million=-1.0), dict(price_per_million=float("nan"))])
def test_estimate_rejects_nonsense_inputs(bad):
    kw = dict(epochs=1, price_per_million=5.0) | bad
    with pytest.raises(ValueError):
        estimate_tuning_cost([FileTokens("train", "t", 1, 1)], **kw)


def test_one_billing_formula_prices_the_estimate_the_prepared_data_and_the_billed_job(tmp_path):
    """Tokens × epochs × price / 1M lives in estimate.training_usd only: the estimate, prepare's cost and the
    report's billed line all give what it gives (sftflow.data.rules.estimate_cost is gone)."""
    from sftflow.cost.report import tuning_cost
    from sftflow.data import rules
    from sftflow.data.prepare import UploadedFile, save_prepared
    from sftflow.records import FileSummary

    assert training_usd(2_000_000, 3, 5.0) == pytest.approx(30.0)
    for bad in [(-1, 1, 1.0), (1, -1, 1.0), (1, 1, -1.0), (1, 1, float("nan"))]:
        with pytest.raises(ValueError):
            training_usd(*bad)
    assert not hasattr(rules, "estimate_cost")
    est = estimate_tuning_cost([FileTokens("train", "t", 10, 2_000_000)], epochs=3, price_per_million=5.0)
    assert est.total_usd == training_usd(2_000_000, 3, 5.0)
    billed = tuning_cost({"cost_estimate": est.to_dict(), "stats": {"billable_tokens": 6_000_000}}, 5.0)
    assert billed.billed_usd == training_usd(6_000_000, 1, 5.0) == pytest.approx(30.0)
    summary = FileSummary(kind="train", source="t", examples=10, estimated_tokens=2_000_000)
    up = {k: UploadedFile(uri=f"{tmp_path}/{k}", uploaded=False, md5="") for k in ("train", "val", "test")}
    assert save_prepared(str(tmp_path), up, [summary], 3, 5.0).cost_usd == training_usd(2_000_000, 3, 5.0)


# ------------------------------------------------------------------------------ the cap


def test_cap_refusal_is_one_line_with_estimate_cap_and_how_to_raise_it():
    est = estimate_tuning_cost([FileTokens("train", "t", 1000, 6_250_000)], epochs=1, price_per_million=5.0)
    check_cap(est, 31.25)  # at the cap: allowed
    with pytest.raises(CostCapExceeded) as err:
        check_cap(est, 25.0)
    msg = str(err.value)
    assert msg == refusal_message(est, 25.0) and "\n" not in msg
    assert "$31.25" in msg and "6,250,000 training tokens" in msg and "cap of $25" in msg
    assert "--max-cost 32" in msg and "SFTFLOW_MAX_TUNING_COST_USD=32" in msg
    assert "no job was submitted" in msg and ESTIMATE_METHOD in msg


class GateTuner:
    """A Tuner recording submits; `existing` is what find() returns."""

    def __init__(self, existing=()):
        self.existing, self.submitted = list(existing), []

    def find(self, key):
        return self.existing

    def submit(self, s):
        self.submitted.append(s)
        return "job/new"


def test_gate_runs_only_before_a_new_submit_never_when_attaching():
    est = estimate_tuning_cost([FileTokens("train", "t", 1, 10_000_000)], epochs=1, price_per_million=5.0)

    def gate():
        check_cap(est, 1.0)

    fresh = GateTuner()
    with pytest.raises(CostCapExceeded):
        ensure_job(fresh, spec("kgate"), before_submit=gate)
    assert fresh.submitted == []
    running = GateTuner([JobStatus("job/old", JobState.RUNNING, key="kgate")])
    assert ensure_job(running, spec("kgate"), before_submit=gate) == ("job/old", True)
    assert running.submitted == []
    # Resubmitting after a failure is a new payment: gated too.
    failed = GateTuner([JobStatus("job/old", JobState.FAILED, key="kgate")])
    with pytest.raises(CostCapExceeded):
        ensure_job(failed, spec("kgate"), resubmit_failed=True, before_submit=gate)
    assert failed.submitted == []


# ------------------------------------------------------------------------------ timeout → cancel


class CancellableTuner:
    """RUNNING until cancelled, then `after_cancel` states in turn (the last one repeats)."""

    def __init__(self, after_cancel, cancel_error=None):
        self.after_cancel, self.cancel_error = list(after_cancel), cancel_error
        self.cancels, self.gets = 0, 0

    def get(self, name):
        self.gets += 1
        if not self.cancels:
            return JobStatus(name, JobState.RUNNING)
        item = self.after_cancel.pop(0) if len(self.after_cancel) > 1 else self.after_cancel[0]
        if isinstance(item, Exception):
            raise item
        return JobStatus(name, item)

    def cancel(self, name):
        self.cancels += 1
        if self.cancel_error:
            raise self.cancel_error


def test_timeout_cancels_and_confirms_through_cancelling():
    clock = FakeClock()
    tuner = CancellableTuner([JobState.CANCELLING, JobState.CANCELLING, JobState.CANCELLED])
    with pytest.raises(JobTimeout, match=r"cancelled after 100 s \(tuning timeout\); final state CANCELLED") as err:
        await_job(tuner, "job/1", poll_interval=30, timeout=100, cancel_on_timeout=True,
                  sleep=clock.sleep, clock=clock)
    assert tuner.cancels == 1 and err.value.cancelled is True
    assert err.value.status.state is JobState.CANCELLED


def test_timeout_cancel_confirmed_when_the_api_says_the_job_is_gone():
    gone = BackendError("reading tuning job job/1: HTTP 404 NOT_FOUND")
    gone.__cause__ = type("E", (Exception,), {"code": 404})()
    clock = FakeClock()
    tuner = CancellableTuner([TransientError("503"), gone])
    with pytest.raises(JobTimeout, match="cancelled after") as err:
        await_job(tuner, "job/1", poll_interval=30, timeout=100, cancel_on_timeout=True,
                  sleep=clock.sleep, clock=clock)
    assert tuner.cancels == 1 and err.value.cancelled is True


def test_timeout_cancel_not_confirmed_says_so():
    clock = FakeClock()
    tuner = CancellableTuner([JobState.CANCELLING])
    with pytest.raises(JobTimeout, match="cancel requested after 100 s .* still reports CANCELLING") as err:
        await_job(tuner, "job/1", poll_interval=30, timeout=100, cancel_on_timeout=True,
                  cancel_confirm_timeout=60, sleep=clock.sleep, clock=clock)
    assert tuner.cancels == 1 and err.value.cancelled is False


def test_a_job_that_succeeds_while_being_cancelled_is_used():
    clock = FakeClock()
    refused = BackendError("cancelling tuning job job/1: HTTP 400 FAILED_PRECONDITION")
    tuner = CancellableTuner([JobState.SUCCEEDED], cancel_error=refused)
    status = await_job(tuner, "job/1", poll_interval=30, timeout=100, cancel_on_timeout=True,
                       sleep=clock.sleep, clock=clock)
    assert status.state is JobState.SUCCEEDED and tuner.cancels == 1


def test_timeout_without_cancel_leaves_the_job_running_and_says_so():
    clock = FakeClock()
    tuner = CancellableTuner([JobState.CANCELLED])
    with pytest.raises(JobTimeout, match="left running") as err:
        await_job(tuner, "job/1", poll_interval=30, timeout=100, cancel_on_timeout=False,
                  sleep=clock.sleep, clock=clock)
    assert tuner.cancels == 0 and err.value.cancelled is None


# ------------------------------------------------------------------------------ flows and CLI (slow)

# 110 tokens an example both ways: characters/4 and the test server's countTokens (words) agree on "aaa ".
LINE = _example("aaa " * 100, "bbb " * 10) + "\n"


@pytest.fixture
def datasets(gcs_bucket):
    return upload_datasets(gcs_bucket, LINE.encode())


def _creates(server) -> int:
    return sum(1 for r in server.requests if r["method"] == "POST" and r["path"].endswith("/tuningJobs"))


@pytest.mark.slow
def test_cap_refuses_with_zero_jobs_but_attaching_and_reuse_are_not_capped(make_vertex_server, datasets,
                                                                          tmp_path):
    from flows.tune import tune
    from sftflow.tuning.plan import build_spec
    from sftflow.tuning.setup import TuningSetup
    from sftflow.backends.vertex import VertexTuner
    from sftflow.config import load_settings

    server = make_vertex_server(job_phases=(0.2, 0.5))
    bucket, train, val = datasets
    # 3 examples × 110 tokens = 330 tokens; at $1M per 1M tokens that is $330, over a $100 cap.
    tiny = flow_config(server, bucket, tmp_path, price_per_million_training_tokens=1_000_000, max_tuning_cost_usd=100)
    state = tune(config={**tiny, "train_uri": train, "val_uri": val}, return_state=True)
    assert state.is_failed()
    with pytest.raises(CostCapExceeded, match=r"\$330.00 .* over the cap of \$100"):
        state.result()
    assert _creates(server) == 0
    assert server.count("POST", ":countTokens") == 4  # the estimate counted every example (3 train, 1 val)

    # A job for this intent already running (e.g. submitted under a higher cap): the rerun attaches.
    s = load_settings(**tiny, train_uri=train, val_uri=val)
    VertexTuner(s).submit(build_spec(TuningSetup.from_settings(s), train, val))
    out = tune(config={**tiny, "train_uri": train, "val_uri": val})
    assert out["endpoint"] and _creates(server) == 1
    assert out["cost_estimate"]["total_usd"] == pytest.approx(330.0)
    # And a finished intent is reused from its record without any request.
    before = len(server.requests)
    assert tune(config={**tiny, "train_uri": train, "val_uri": val})["endpoint"] == out["endpoint"]
    assert len(server.requests) == before


def _cli(args, server, gcs_emulator, tmp_path, **env):
    from tests.servers.vertex_fixtures import TEST_TOKEN

    full = dict(os.environ, STORAGE_EMULATOR_HOST=gcs_emulator, SFTFLOW_VERTEX_BASE_URL=server.base_url,
                SFTFLOW_VERTEX_ACCESS_TOKEN=TEST_TOKEN, PREFECT_HOME=str(tmp_path / "prefect-home"), **env)
    cmd = [sys.executable, "-m", "sftflow.cli.main", *args, "--project", server.project, "--local-root",
           str(tmp_path / "root")]
    return subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_cap_refusal_exits_1_with_one_line_and_dry_run_calls_no_tuning_api(make_vertex_server, gcs_emulator,
                                                                              datasets, tmp_path, prefect_api_env):
    server = make_vertex_server()
    bucket, train, val = datasets
    base = ["tune", "--backend", "vertex", "--bucket", bucket, "--train", train, "--val", val]
    # 330 tokens × 2 epochs at $5/1M = $0.0033: over a cap of $0.001 set through the environment.
    proc = _cli([*base, "--epochs", "2"], server, gcs_emulator, tmp_path, SFTFLOW_MAX_TUNING_COST_USD="0.001",
                **prefect_api_env)  # the session's Prefect server: no temporary server start per process
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("sftflow: error:")]
    assert len(errors) == 1
    assert "estimated tuning cost $0.0033 (660 training tokens = 330 × 2 epoch(s)" in errors[0]
    assert "over the cap of $0.001" in errors[0] and "--max-cost 1" in errors[0]
    assert "Traceback" not in proc.stderr
    assert _creates(server) == 0

    # --dry-run: the estimate and the exact job, and not one request to the tuning API.
    server.requests.clear()
    proc = _cli([*base, "--dry-run", "--epochs", "3", "--adapter-size", "8", "--display-name", "dry",
                 "--max-cost", "0.5"], server, gcs_emulator, tmp_path, **prefect_api_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "dry run: nothing submitted" in out
    assert f"train: {train}: 3 examples, 330 tokens, 990 tokens × epochs" in out
    assert f"val: {val}: 1 examples, 110 tokens, not billed" in out
    assert "price: $5 per 1M training tokens" in out and "cap: $0.5" in out and "within" in out
    assert "approval: needed" not in out  # $0.00495 is below approve_above_usd ($5)
    assert not [r for r in server.requests if "tuningJobs" in r["path"]]
    # What it printed is exactly what submit sends: the printed job, sent through google-genai, makes the body
    # that a real submit of this intent sent, byte for byte (hyperparameters, datasets, display name, key label).
    from google.genai import types

    from sftflow.backends.vertex import VertexTuner
    from sftflow.backends.vertex_client import make_genai_client
    from sftflow.config import load_settings
    from sftflow.tuning.plan import build_spec
    from sftflow.tuning.setup import TuningSetup
    from tests.servers.vertex_fixtures import TEST_TOKEN

    printed = out.split("job (vertex):\n", 1)[1].split("\n")
    job = {k.strip(): json.loads(v) if v.startswith("{") else v
           for k, _, v in (line.partition(": ") for line in printed if line.startswith("  "))}
    assert job["config"]["epoch_count"] == 3 and job["config"]["tuned_model_display_name"] == "dry"
    s = load_settings(backend="vertex", project=server.project, bucket=bucket, vertex_base_url=server.base_url,
                      vertex_access_token=TEST_TOKEN, local_root=str(tmp_path / "root"), epochs=3, adapter_size=8,
                      tuned_model_display_name="dry")
    VertexTuner(s).submit(build_spec(TuningSetup.from_settings(s), train, val))
    sent = server.requests[-1]["body"]
    client = make_genai_client(s)  # held: a google-genai client closes its connections when collected
    client.tunings.tune(base_model=job["base_model"],
                        training_dataset=types.TuningDataset.model_validate(job["training_dataset"]),
                        config=types.CreateTuningJobConfig.model_validate(job["config"]))
    assert server.requests[-1]["body"] == sent and sent["labels"] == job["config"]["labels"]


@pytest.mark.slow
@pytest.mark.parametrize("cancel", [True, False])
def test_tuning_timeout_cancels_the_job_exactly_once(make_vertex_server, datasets, tmp_path, cancel):
    from flows.tune import tune
    from sftflow.backends.vertex import VertexTuner
    from sftflow.config import load_settings

    server = make_vertex_server(job_phases=(1.0, 120.0))
    bucket, train, val = datasets
    config = flow_config(server, bucket, tmp_path, tuning_timeout=2, cancel_job_on_timeout=cancel)
    state = tune(config={**config, "train_uri": train, "val_uri": val}, return_state=True)
    assert state.is_failed()
    with pytest.raises(JobTimeout) as err:
        state.result()
    assert _creates(server) == 1
    name = server.job_names[0]
    final = VertexTuner(load_settings(**config)).get(name).state
    if cancel:
        assert "cancelled after 2 s (tuning timeout); final state CANCELLED" in str(err.value)
        assert server.count("POST", ":cancel") == 1
        assert final is JobState.CANCELLED
    else:
        assert "left running" in str(err.value)
        assert server.count("POST", ":cancel") == 0
        assert final is JobState.RUNNING


@pytest.mark.slow
def test_local_backend_cap_refuses_before_a_local_job_starts(tmp_path):
    from flows.tune import tune

    train = tmp_path / "train.jsonl"
    train.write_text(LINE * 3, encoding="utf-8")
    root = tmp_path / "root"
    config = {"backend": "local", "local_root": str(root), "max_tuning_cost_usd": 0.0001}
    state = tune(config={**config, "train_uri": str(train)}, return_state=True)
    assert state.is_failed()
    with pytest.raises(CostCapExceeded) as err:
        state.result()
    assert "local backend" in str(err.value) and "$0.0001" in str(err.value)
    jobs = root / "work" / "jobs"
    assert not jobs.exists() or not any(jobs.iterdir())


@pytest.mark.parametrize("cmd", ["tune", "pipeline"])
def test_max_cost_flag_reaches_the_setting_on_every_command_that_submits_a_job(cmd, monkeypatch):
    from sftflow.cli.main import build_parser
    from sftflow.cli.config import run_config
    from sftflow.config import load_settings

    monkeypatch.delenv("SFTFLOW_MAX_TUNING_COST_USD", raising=False)
    config, settings = run_config(build_parser().parse_args([cmd, "--max-cost", "3.5"]))
    assert config["max_tuning_cost_usd"] == 3.5 and settings.max_tuning_cost_usd == 3.5
    assert load_settings().max_tuning_cost_usd == 25.0 and load_settings().cancel_job_on_timeout is True
    monkeypatch.setenv("SFTFLOW_MAX_TUNING_COST_USD", "40")
    assert load_settings().max_tuning_cost_usd == 40.0
