"""What README promises about the command line, checked in fresh processes as a user runs them:
`sftflow pipeline --recipe …` prints the report's path as stdout's last line (a flag wins over the
recipe), and Prefect's cache outlives the process (a second `sftflow prepare`, in a new process with
a new Prefect home and another Prefect database, converts nothing)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a whole local pipeline (~40 s on 2 cores) and a second process

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "local-quick.yaml"  # samples 10, budget 10 s


def _sftflow(args: list[str], tmp_path, home: str, **env: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / home), PREFECT_LOGGING_LEVEL="INFO", **env)
    return subprocess.run([sys.executable, "-m", "sftflow.cli.main", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


def test_pipeline_prints_report_last_and_cache_survives_the_process(tmp_path, prefect_api_env):
    root = tmp_path / "root"
    # 40 examples per file, not 400 (encoding every training sentence once took ~30 s), and a 1 s poll
    # (not 60 s) for the job that ends after its 10 s budget.
    first = _sftflow(["pipeline", "--recipe", str(RECIPE), "--samples", "5", "--local-root", str(root),
                      "--set", "limit=40", "--poll-interval", "1"], tmp_path, "prefect-home-1")
    assert first.returncode == 0, first.stderr[-3000:]
    report = root / "runs" / "default" / "report.md"
    assert first.stdout.splitlines()[-1] == f"report: {report}"
    assert report.read_text().startswith("#")
    assert first.stdout.splitlines()[-2].startswith("champion: ")  # the champion decision, just before
    assert first.stdout.splitlines()[-3].endswith("n=5")  # --samples 5 wins over the recipe's 10
    [job] = (root / "work" / "jobs").glob("*/spec.json")
    assert json.loads(job.read_text())["spec"]["train"]["budget_s"] == 10  # the recipe's, over the default
    prepared = {p: p.stat().st_mtime_ns for p in (root / "work").rglob("*.jsonl") if "-" in p.stem}
    assert len(prepared) >= 2  # the converted train and val files

    # on the session's Prefect server: not the first run's (temporary) database, and no second temporary start
    again = _sftflow(["prepare", "--local-root", str(root), "--limit", "40"], tmp_path, "prefect-home-2",
                     **prefect_api_env)
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stderr
    for task in ("download", "convert", "validate"):
        states = re.findall(rf"Task run '{task}-[^']*' - Finished in state (\w+)", log)
        assert states and set(states) == {"Cached"}, (task, states, log[-3000:])
    assert "converted " not in log  # no re-conversion
    assert {p: p.stat().st_mtime_ns for p in prepared} == prepared
