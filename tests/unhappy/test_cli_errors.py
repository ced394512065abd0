"""User errors are one line on the terminal; bugs keep their traceback; SFTFLOW_DEBUG and the UI see all.

Each test runs the real `sftflow` CLI in a subprocess, with Prefect logging at INFO as a user's
terminal has it, and reads what a user would read on stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SERVER_LIFECYCLE = "Stopping temporary server"  # Prefect's own line at process exit (atexit)


def run_cli(tmp_path: Path, *args: str, debug: bool = False, code: str | None = None,
            api: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`api`: prefect_api_env (the session's Prefect server); without it, Prefect's temporary server."""
    env = dict(os.environ, PREFECT_LOGGING_LEVEL="INFO", **(api or {}))
    env.pop("SFTFLOW_DEBUG", None)
    if debug:
        env["SFTFLOW_DEBUG"] = "1"
    argv = [*args, "--local-root", str(tmp_path / "root")]
    cmd = [sys.executable, "-m", "sftflow.cli.main", *argv] if code is None else [sys.executable, "-c", code, *argv]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def user_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if SERVER_LIFECYCLE not in line]


def test_missing_file_is_one_line_and_the_ui_keeps_the_traceback(tmp_path):
    # evaluate reads its test file inside the flow (pipeline/prepare/tune/sweep check local inputs before)
    proc = run_cli(tmp_path, "evaluate", "--test", "nope.csv")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Error encountered when computing cache key" not in proc.stderr
    lines = user_lines(proc.stderr)
    assert lines[-1] == "sftflow: error: nope.csv: no such file"
    assert len(proc.stderr.splitlines()) <= 10, proc.stderr

    # The Prefect API (what the UI shows) still has the full traceback of the failed flow run.
    from prefect import get_client

    with get_client(sync_client=True) as client:
        logs = [log.message for log in client.read_logs(limit=200)]
    failed = [m for m in logs if "Encountered exception during execution" in m and "nope.csv: no such file" in m]
    assert failed and all("Traceback (most recent call last)" in m for m in failed), failed[:1]


def test_bad_data_prints_path_line_field_problem_and_no_traceback(tmp_path):
    """Checked before Prefect starts: one block of problems, the summary last, nothing written."""
    bad = tmp_path / "bad.jsonl"
    ok = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    bad.write_text(json.dumps(ok) + "\n"
                   + '{"messages": [{"role": "user", "content": "\\ud800"}, {"role": "assistant", "content": "a"}]}\n'
                   + json.dumps({"messages": [{"role": "robot", "content": "q"}]}) + "\n")
    proc = run_cli(tmp_path, "prepare", "--train", "bad.jsonl")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines() == [
        "bad.jsonl:2: messages[0].content: lone surrogate \\ud800 at character 1: not valid Unicode "
        "(half of an escaped emoji?); the tuning service cannot read it",
        "bad.jsonl:3: messages[0].role: unknown role 'robot' (allowed: system, user, assistant, model)",
        "sftflow: error: 2 problem(s) in --train bad.jsonl (the rules of 'sftflow validate'); nothing was started",
    ]
    assert not (tmp_path / "root").exists()


def test_debug_shows_the_traceback(tmp_path, prefect_api_env):
    proc = run_cli(tmp_path, "evaluate", "--test", "nope.csv", debug=True, api=prefect_api_env)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert "StorageError: nope.csv: no such file" in proc.stderr


BUG = """
import sys
import sftflow.data.prepare
from sftflow.cli.main import main

def convert_with_a_bug(*args, **kwargs):  # stands in for a bug in sftflow's own code
    return 1 / 0

sftflow.data.prepare.convert_messages_file = convert_with_a_bug
sys.exit(main(sys.argv[1:]))
"""


def test_an_unexpected_error_keeps_its_traceback(tmp_path, prefect_api_env):
    proc = run_cli(tmp_path, "prepare", code=BUG, api=prefect_api_env)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert "convert_with_a_bug" in proc.stderr  # the frame that failed is shown
    assert user_lines(proc.stderr)[-1] == ("sftflow: error: ZeroDivisionError: division by zero "
                                           "(set SFTFLOW_DEBUG=1 for the traceback)")
