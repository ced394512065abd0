"""Test runs stay on this machine whatever the developer's environment says about Prefect."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a pytest subprocess that starts Prefect's temporary server
def test_suite_ignores_a_developers_prefect_server_and_cloud_settings(tmp_path):
    developer_home = tmp_path / "developer-prefect-home"
    developer_home.mkdir()
    env = dict(os.environ, PREFECT_API_URL="http://127.0.0.1:9/api", PREFECT_API_KEY="pnu_not_a_real_key",
               PREFECT_PROFILE="developer-cloud", PREFECT_HOME=str(developer_home),
               PROBE_DEVELOPER_HOME=str(developer_home), STORAGE_EMULATOR_HOST="http://127.0.0.1:9")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/probe_isolation.py"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 passed" in proc.stdout
    assert list(developer_home.iterdir()) == []  # nothing written to the developer's Prefect home


@pytest.mark.parametrize("ci", ["", "true"])
def test_a_skip_is_loud_outside_ci_and_a_failure_in_ci(ci):
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = ci
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/probe_skip.py"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    out = proc.stdout
    message = "NOT CHECKED: the widget (probe). To check it: install the widget"
    if ci:
        assert proc.returncode == 1, out
        assert f"Failed: {message} (CI must check it)" in out
    else:
        assert proc.returncode == 0, out
        summary = out.split("checks skipped on this machine", 1)[1]
        assert summary.splitlines()[1] == message  # the terminal summary's own section, in full
        assert "1 skipped" in out
