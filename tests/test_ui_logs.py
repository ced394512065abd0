"""Warnings of sftflow's own loggers reach a run's logs in the Prefect UI, not only the terminal.

Prefect ships only its run loggers to the API unless PREFECT_LOGGING_EXTRA_LOGGERS names more
(https://docs.prefect.io/v3/advanced/logging-customization); the CLI and the deployments' job env name
`sftflow`. The test runs a real flow through the CLI on the session's Prefect server, with domain code
(sftflow.evaluation.results) that logs a warning, and reads the run's logs back through the API.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from sftflow.evaluation.results import ExampleResult, results_to_jsonl

ROOT = Path(__file__).resolve().parents[1]


def _results(path: Path, model: str, score: float, cut_last_line: bool = False) -> str:
    recs = [ExampleResult(id=f"e{i}", model=model, prompt_chars=10, reference="r", output="o", attempts=1,
                          scores={"rouge1": score + i / 100, "rouge2": score, "rougeL": score + i / 50})
            for i in range(12)]
    text = results_to_jsonl(recs)
    path.write_text(text + (text.splitlines()[0][:25] if cut_last_line else ""), encoding="utf-8")
    return str(path)


def _logs(api: str, flow_run_id: str) -> list[dict]:
    body = json.dumps({"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200}).encode()
    req = urllib.request.Request(f"{api.rstrip('/')}/logs/filter", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


@pytest.mark.slow
def test_a_domain_warning_reaches_the_runs_logs_in_the_prefect_api(tmp_path, prefect_server):
    base = _results(tmp_path / "base.jsonl", "base-model", 0.2)
    tuned = _results(tmp_path / "tuned.jsonl", "tuned-model", 0.5, cut_last_line=True)  # a kill mid-write
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_LOGGING", "SFTFLOW_"))}
    env.update(PREFECT_API_URL=prefect_server.url, PREFECT_HOME=str(tmp_path / "prefect-home"),
               PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "sftflow.cli.main", "compare", base, tuned,
                           "--local-root", str(tmp_path / "root")], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warning = "ignoring a truncated last line"
    assert warning in proc.stderr  # the terminal has it, as before
    [run_id] = re.findall(r"watch: \S+/runs/flow-run/([0-9a-f-]{36})", proc.stderr)
    shipped = [log for log in _logs(prefect_server.url, run_id) if warning in log["message"]]
    assert shipped, proc.stderr[-3000:]
    assert shipped[0]["name"] == "sftflow.evaluation.results" and shipped[0]["level"] == 30  # WARNING
    assert "MissingContextError" not in proc.stderr and "without a flow run id" not in proc.stderr


def test_the_deployments_job_env_ships_sftflow_loggers_too():
    """A worker's flow-run process gets its logging from the job's environment, not from the CLI."""
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    envs = [spec["definitions"]["local_pool"]["job_variables"]["env"]]
    envs += [d["work_pool"]["job_variables"]["env"] for d in spec["deployments"]
             if "env" in (d.get("work_pool") or {}).get("job_variables", {})]
    assert len(envs) >= 2 and all(e.get("PREFECT_LOGGING_EXTRA_LOGGERS") == "sftflow" for e in envs)
