"""sft_pipeline with eval_mode=batch against the Vertex-shaped server + GCS emulator: base and tuned
models are evaluated by batch jobs (the tuned one by its model resource name), not online calls."""

import json

import pytest

from flows.pipeline import sft_pipeline
from sftflow.infra import storage
from tests.flowutil import flow_artifacts
from tests.servers.vertex_fixtures import TEST_TOKEN
from tests.smalldata import small_samples

pytestmark = pytest.mark.slow


def test_pipeline_in_batch_mode_end_to_end(make_vertex_server, gcs_bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("SFTFLOW_VERTEX_ACCESS_TOKEN", TEST_TOKEN)
    server = make_vertex_server(job_phases=(0.5, 1.0))
    server.batch.timeline = (("PENDING", 0.3), ("RUNNING", 0.5))
    server.batch.fail_rate = 0.2  # failed rows: asked again (online, as they are few)
    paths = small_samples(tmp_path)  # tuning data only feeds the job: a few examples to count, not 450
    config = {"backend": "vertex", "project": server.project, "region": server.location, "bucket": gcs_bucket,
              "vertex_base_url": server.base_url, "poll_interval": 1, "batch_poll_interval": 1,
              "local_root": str(tmp_path / "root"), "train_uri": paths["train"], "val_uri": paths["val"],
              "test_uri": paths["test"], "samples": 12, "eval_mode": "batch", "batch_online_below": 50}
    state = sft_pipeline(config=config, return_state=True)
    out = state.result()
    progress = [a for a in flow_artifacts(state) if a.type == "progress"]
    judging = [a for a in progress if (a.description or "").startswith("Judging pairs")]
    assert len(judging) == 1 and judging[0].data == 100.0  # judge auto on vertex: the pairwise judge, online
    progress = [a for a in progress if a not in judging]
    assert len(progress) == 2 and all(a.data == 100.0 for a in progress)
    assert all("batch job round 1 SUCCEEDED" in (a.description or "") for a in progress), progress
    assert server.batch.creates == 2
    models = sorted(r["body"]["model"] for r in server.requests
                    if r["method"] == "POST" and r["path"].endswith("/batchPredictionJobs") and r["status"] == 200)
    assert models[0].startswith("projects/test-project/locations/us-central1/models/")  # the tuned model
    assert models[1] == "publishers/google/models/gemini-2.5-flash"
    report = json.loads(storage.read_text(out["report_json_uri"]))
    for label in ("base", "tuned"):
        summary = json.loads(storage.read_text(f"{gcs_bucket}/runs/default/eval/{label}/summary.json"))
        assert summary["mode"] == "batch" and summary["counts"]["scored"] == 12, summary
        assert summary["cost"]["batch_usd"] == pytest.approx(summary["cost"]["online_usd"] / 2)
        md = storage.read_text(f"{gcs_bucket}/runs/default/eval/{label}/report.md")
        assert "Mode: batch" in md and "at batch rates" in md
    # the failed rows (few) were asked online, each once; nothing else went online
    online = server.count("POST", ":generateContent")
    failed = sum(j["failed"] for label in ("base", "tuned") for j in json.loads(storage.read_text(
        f"{gcs_bucket}/runs/default/eval/{label}/summary.json"))["batch"]["jobs"])
    assert online == failed
    assert report["comparison"]["n_paired"] == 12
    # the run cost prices both evaluations at the batch rate, as their summaries do
    evals = {e["label"]: e for e in report["cost"]["evaluations"]}
    for label in ("base", "tuned"):
        summary = json.loads(storage.read_text(f"{gcs_bucket}/runs/default/eval/{label}/summary.json"))
        assert evals[label]["batch"] and summary["cost"]["batch_usd"] > 0
        assert evals[label]["usd"] == pytest.approx(summary["cost"]["batch_usd"])
