"""Issue 9, item 12: evaluation on the vertex backend needs no bucket; only prepare and tune do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.compare import compare
from flows.evaluate import evaluate
from sftflow.data.samples import sample_paths
from tests.servers.vertex_fixtures import TEST_TOKEN

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _token_in_env(monkeypatch):
    """The token comes from the environment, as in real use: a flow refuses it as a parameter."""
    monkeypatch.setenv("SFTFLOW_VERTEX_ACCESS_TOKEN", TEST_TOKEN)


def _vertex_config(server, tmp_path) -> dict:
    return {"backend": "vertex", "project": server.project, "region": server.location,
            "vertex_base_url": server.base_url,
            "local_root": str(tmp_path / "root"), "samples": 4, "rpm": 6000, "run_name": "nobucket"}


def test_vertex_evaluate_and_compare_without_a_bucket_keep_results_locally(vertex_server, tmp_path, monkeypatch):
    monkeypatch.delenv("SFTFLOW_BUCKET", raising=False)
    config = _vertex_config(vertex_server, tmp_path)
    test_csv = sample_paths()["test"]
    root = (tmp_path / "root").resolve()
    base = evaluate(model="base", config={**config, "test_uri": test_csv})
    endpoint = vertex_server.deploy_tuned_model()["endpoint"]  # a real tuned endpoint: the server 404s others
    tuned = evaluate(model=endpoint, label="tuned", config={**config, "test_uri": test_csv})
    for out in (base, tuned):
        assert Path(out["results_uri"]).is_file()
        assert Path(out["results_uri"]).is_relative_to(root / "runs" / "nobucket")
    assert vertex_server.count("POST", ":generateContent") == 8
    comp = compare(config=config)
    assert Path(comp["comparison_uri"]).is_file() and Path(comp["comparison_uri"]).is_relative_to(root)


def test_vertex_tune_without_a_bucket_is_one_line_and_no_request(vertex_server, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFTFLOW_")}
    env.update(SFTFLOW_VERTEX_BASE_URL=vertex_server.base_url, SFTFLOW_VERTEX_ACCESS_TOKEN=TEST_TOKEN)
    proc = subprocess.run(
        [sys.executable, "-m", "sftflow.cli.main", "tune", "--backend", "vertex", "--project", vertex_server.project,
         "--train", "gs://somewhere/train.jsonl", "--local-root", str(tmp_path / "root")],
        env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("sftflow: error:") and "SFTFLOW_BUCKET" in lines[0] and "--bucket" in lines[0]
    assert vertex_server.requests == []
