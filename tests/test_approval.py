"""The approval gate: above approve_above_usd a new tuning job needs a yes; the cap comes first; attaching
to a running job is not gated; the command line refuses without a terminal unless --approve.

The pause in the Prefect UI (a real server and worker) is checked in tests/test_e2e_deployment.py."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from sftflow.cost.approval import (
    ApprovalDenied,
    approval_markdown,
    ask_terminal,
    cli_approval_default,
    decide_without_pause,
    needs_approval,
    refused_message,
    ui_decision,
)
from sftflow.cost.estimate import CostCapExceeded, FileTokens, estimate_tuning_cost
from tests.servers.vertex_fixtures import TEST_TOKEN, flow_config, upload_datasets

pytestmark = pytest.mark.usefixtures("token_in_env")

EST = estimate_tuning_cost([FileTokens("train", "gs://b/t.jsonl", 1000, 2_000_000)], epochs=1, price_per_million=5.0)


def test_needs_approval_only_above_the_threshold_and_the_terminal_says_no_by_default():
    assert EST.total_usd == 10.0
    assert needs_approval(EST, 5.0) and not needs_approval(EST, 10.0)
    assert ask_terminal(EST, 5.0, ask=lambda q: "y") and ask_terminal(EST, 5.0, ask=lambda q: " YES ")
    for answer in ("", "n", "no", "sure"):
        assert not ask_terminal(EST, 5.0, ask=lambda q, a=answer: a)

    def eof(q: str) -> str:
        raise EOFError

    assert not ask_terminal(EST, 5.0, ask=eof)


def test_each_approval_mode_decides_in_plain_python_and_only_ui_with_a_server_pauses():
    """What each approval_mode decides (sftflow.cost.approval); flows/approval.py only pauses and hands over."""
    decide = decide_without_pause
    assert decide(EST, 10.0, "refuse", can_pause=False) == "within approve_above_usd ($10)"
    assert decide(EST, 5.0, "approved", can_pause=False) == "approved in advance"
    assert decide(EST, 5.0, "prompt", can_pause=True, ask=lambda e, t: True) == "approved on the terminal"
    with pytest.raises(ApprovalDenied, match=r"answered no on the terminal"):
        decide(EST, 5.0, "prompt", can_pause=True, ask=lambda e, t: False)
    with pytest.raises(ApprovalDenied, match=r"not asked: no terminal.*approve_above_usd \$5"):
        decide(EST, 5.0, "refuse", can_pause=True)
    with pytest.raises(ApprovalDenied, match=r"no Prefect server holds this run"):
        decide(EST, 5.0, "ui", can_pause=False)
    assert decide(EST, 5.0, "ui", can_pause=True) is None  # the flow pauses for the UI's answer
    assert decide(EST, 5.0, "suspend", can_pause=False) is None  # the flow suspends (it checks it can)
    assert ui_decision(EST, 5.0, True, "", 60) == "approved in the Prefect UI"
    with pytest.raises(ApprovalDenied, match=r"rejected in the Prefect UI: too dear"):
        ui_decision(EST, 5.0, False, "too dear", 60)
    with pytest.raises(ApprovalDenied, match=r"no answer within 60 s"):
        ui_decision(EST, 5.0, None, "", 60)


class _Stdin(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_command_line_prompts_on_a_terminal_refuses_otherwise_and_the_environment_wins(monkeypatch):
    monkeypatch.delenv("SFTFLOW_APPROVAL_MODE", raising=False)
    assert cli_approval_default("tune", _Stdin(True)) == {"approval_mode": "prompt"}
    assert cli_approval_default("pipeline", _Stdin(False)) == {"approval_mode": "refuse"}
    assert cli_approval_default("evaluate", _Stdin(True)) == {}
    monkeypatch.setenv("SFTFLOW_APPROVAL_MODE", "approved")
    assert cli_approval_default("tune", _Stdin(False)) == {}
    from sftflow.cli.main import build_parser
    from sftflow.cli.config import overrides

    assert overrides(build_parser().parse_args(["tune", "--approve"]))["approval_mode"] == "approved"
    assert overrides(build_parser().parse_args(["pipeline", "--approve"]))["approval_mode"] == "approved"



def test_the_command_line_default_is_only_a_default_flag_recipe_and_environment_win(tmp_path, monkeypatch):
    """PRECEDENCE: explicit > recipe > environment > default; the CLI's terminal-dependent choice is the default."""
    from sftflow.cli.main import build_parser
    from sftflow.cli.config import run_config

    monkeypatch.delenv("SFTFLOW_APPROVAL_MODE", raising=False)
    monkeypatch.setattr(sys, "stdin", _Stdin(False))  # no terminal, as in CI or a cron job
    recipe = tmp_path / "r.yaml"
    recipe.write_text("approval_mode: approved\n")

    def mode(*argv: str) -> tuple[str | None, str]:
        config, s = run_config(build_parser().parse_args(list(argv)))
        return config.get("approval_mode"), s.approval_mode

    assert mode("tune") == ("refuse", "refuse") and mode("sweep") == ("refuse", "refuse")
    assert mode("tune", "--recipe", str(recipe)) == (None, "approved")  # the recipe's, not the CLI's default
    assert mode("sweep", "--recipe", str(recipe)) == (None, "approved")
    assert mode("tune", "--recipe", str(recipe), "--set", "approval_mode=refuse") == ("refuse", "refuse")
    assert mode("sweep", "--approve") == ("approved", "approved")
    monkeypatch.setenv("SFTFLOW_APPROVAL_MODE", "ui")
    assert mode("pipeline") == (None, "ui")
    assert mode("pipeline", "--recipe", str(recipe)) == (None, "approved")  # recipe > environment


def test_a_grid_is_approved_once_for_its_new_jobs_only():
    from sftflow.cost.approval import grid_approval_markdown
    from sftflow.selection.grid import check_grid_cap

    two = estimate_tuning_cost(EST.files, epochs=2, price_per_million=5.0)
    estimates = {"e1-a4-lr1": EST, "e2-a4-lr1": two, "e2-a8-lr1": two}
    grid = check_grid_cap(estimates, ["e2-a8-lr1"], 100.0)  # its job is running or finished: committed
    assert grid.total_usd == 30.0 and list(grid.owed) == ["e1-a4-lr1", "e2-a4-lr1"]
    assert needs_approval(grid, 29.0) and not needs_approval(grid, 30.0)
    assert not needs_approval(check_grid_cap(estimates, estimates, 100.0), 0.0)  # all committed: nothing owed
    message = refused_message(grid, 5.0, "not asked: no terminal")
    assert message.startswith("tuning not approved (not asked: no terminal): estimated cost $30.00 for the grid's "
                              "2 new job(s) (e1-a4-lr1 $10.00, e2-a4-lr1 $20.00) is above approve_above_usd $5")
    md = grid_approval_markdown(grid, 5.0, 100.0, [("train", "gs://b/t.jsonl", {"examples": 1000})])
    assert md.startswith("# Approve this sweep's 2 new tuning job(s)? $30.00")
    assert "| e1-a4-lr1 | 1 | 2,000,000 | $10.00 |" in md and "| e2-a4-lr1 | 2 | 4,000,000 | $20.00 |" in md
    assert "| **total** | | 6,000,000 | **$30.00** |" in md and "e2-a8-lr1" not in md
    assert "| train | `gs://b/t.jsonl` | 1,000 |" in md and "`max_tuning_cost_usd` ($100)" in md

def test_the_approver_sees_estimate_data_and_hyperparameters():
    data = [("train", "gs://b/t.jsonl", {"examples": 1000, "estimated_tokens": 1_900_000})]
    md = approval_markdown(EST, 5.0, 25.0, data, {"epoch_count": 3, "adapter_size": 8})
    assert md.startswith("# Approve this tuning job? $10.00")
    assert "`approve_above_usd` ($5)" in md and "`max_tuning_cost_usd` ($25)" in md
    assert "| train | `gs://b/t.jsonl` | 1,000 | 1,900,000 |" in md
    assert "| epoch_count | `3` |" in md and "| adapter_size | `8` |" in md
    assert "2,000,000" in md and "https://cloud.google.com/" in md
    # the request as `Tuner.request` builds it (nested): one row per field, dotted, never a dict in a cell
    md = approval_markdown(EST, 5.0, 25.0, data, {"base_model": "gemini-2.5-flash",
                                                  "config": {"epoch_count": 3, "labels": {"sftflow-key": "k1"}}})
    assert "| config.epoch_count | `3` |" in md and "| config.labels.sftflow-key | `k1` |" in md
    assert "| base_model | `gemini-2.5-flash` |" in md and "{" not in md.split("## Job")[1]


def test_dry_run_says_when_approval_would_be_needed():
    from sftflow.tuning.report import dry_run_lines

    plan = {"estimate": EST.to_dict(), "within_cap": True, "cap_usd": 25.0, "approve_above_usd": 5.0,
            "backend": "vertex", "job": {"epoch_count": 1}, "finished_record": False}
    assert any(line.startswith("approval: needed (above approve_above_usd $5)") for line in dry_run_lines(plan))
    assert not any("approval" in line for line in dry_run_lines({**plan, "approve_above_usd": 10.0}))


# ------------------------------------------------------------------------------ flows and CLI (slow)

LINE = (b'{"contents":[{"role":"user","parts":[{"text":"' + b"aaa " * 100 + b'"}]},'
        b'{"role":"model","parts":[{"text":"' + b"bbb " * 10 + b'"}]}]}\n')  # 110 tokens


def _creates(server) -> int:
    return sum(1 for r in server.requests if r["method"] == "POST" and r["path"].endswith("/tuningJobs"))


@pytest.mark.slow
def test_flow_gate_order_cap_then_approval_and_attaching_is_not_gated(make_vertex_server, gcs_bucket, tmp_path):
    from flows.tune import tune
    from sftflow.tuning.plan import build_spec
    from sftflow.tuning.setup import TuningSetup
    from sftflow.backends.vertex import VertexTuner
    from sftflow.config import load_settings

    server = make_vertex_server(job_phases=(0.2, 0.5))
    bucket, train, val = upload_datasets(gcs_bucket, LINE)
    # 330 training tokens at $5/1M = $0.00165: above approve_above_usd=0.001.
    cfg = flow_config(server, bucket, tmp_path, approve_above_usd=0.001, train_uri=train, val_uri=val)

    # Tests run Prefect without a server: nobody could resume a pause, so the run ends at once.
    state = tune(config={**cfg, "approval_mode": "ui"}, return_state=True)
    with pytest.raises(ApprovalDenied, match="no Prefect server holds this run"):
        state.result()
    # The cap is checked first: over both, the cap's refusal is what the user reads.
    state = tune(config={**cfg, "approval_mode": "refuse", "max_tuning_cost_usd": 0.001},
                 return_state=True)
    with pytest.raises(CostCapExceeded):
        state.result()
    assert _creates(server) == 0

    # A job for this intent already running: attaching is not gated (its cost is committed).
    s = load_settings(**cfg)
    VertexTuner(s).submit(build_spec(TuningSetup.from_settings(s), train, val))
    out = tune(config={**cfg, "approval_mode": "refuse"})
    assert out["endpoint"] and _creates(server) == 1

    # Approved in advance (--approve): a new intent is submitted once.
    out = tune(config={**cfg, "epochs": 2, "approval_mode": "approved"})
    assert out["endpoint"] and _creates(server) == 2


@pytest.mark.slow
def test_cli_without_a_terminal_refuses(make_vertex_server, gcs_emulator, gcs_bucket, tmp_path, prefect_api_env):
    server = make_vertex_server(job_phases=(0.2, 0.5))
    bucket, train, val = upload_datasets(gcs_bucket, LINE)
    env = dict(os.environ, STORAGE_EMULATOR_HOST=gcs_emulator, SFTFLOW_VERTEX_BASE_URL=server.base_url,
               SFTFLOW_VERTEX_ACCESS_TOKEN=TEST_TOKEN, PREFECT_HOME=str(tmp_path / "prefect-home"),
               SFTFLOW_APPROVE_ABOVE_USD="0.001", SFTFLOW_POLL_INTERVAL="1", **prefect_api_env)
    env.pop("SFTFLOW_APPROVAL_MODE", None)
    cmd = [sys.executable, "-m", "sftflow.cli.main", "tune", "--backend", "vertex", "--bucket", bucket, "--train", train,
           "--val", val, "--project", server.project, "--local-root", str(tmp_path / "root")]
    proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    [error] = [line for line in proc.stderr.splitlines() if line.startswith("sftflow: error:")]
    assert "tuning not approved (not asked: no terminal)" in error and "approve_above_usd $0.001" in error
    assert "--approve" in error and "Traceback" not in proc.stderr
    assert _creates(server) == 0
    # --approve → approval_mode=approved (test_command_line_...), which submits (test_flow_gate_order_...).


@pytest.mark.slow
def test_pipeline_gates_before_its_baseline_evaluation_spends_anything(tmp_path):
    from flows.pipeline import sft_pipeline

    root = tmp_path / "root"
    config = {"backend": "local", "local_root": str(root), "samples": 4, "approve_above_usd": 0,
              "approval_mode": "refuse"}
    state = sft_pipeline(config=config, return_state=True)
    with pytest.raises(ApprovalDenied, match="tuning not approved"):
        state.result()
    assert list(root.rglob("prepared*.json"))  # prepare ran (it costs nothing) ...
    assert not (root / "runs" / "default" / "eval").exists()  # ... the baseline evaluation never started
    assert not list((root / "work").rglob("*base*"))
    jobs = root / "work" / "jobs"
    assert not jobs.exists() or not any(jobs.iterdir())
