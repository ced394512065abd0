"""sft_pipeline in-process: the local backend end to end, and the vertex backend against the
Vertex-shaped server + GCS emulator, with end-to-end caching checked by the server's request log."""

import json
import re
from pathlib import Path

import pytest

from flows.pipeline import sft_pipeline
from sftflow.selection import champion
from sftflow.infra import storage
from sftflow.data.samples import sample_paths
from tests.flowutil import flow_artifacts, task_states
from tests.servers.vertex_datasets import billable_tokens
from tests.servers.vertex_fixtures import TEST_TOKEN

pytestmark = pytest.mark.slow


def _check_report_matches_files(out):
    report = json.loads(storage.read_text(out["report_json_uri"]))
    assert report["comparison_uri"] == out["report_uri"].rsplit("/", 1)[0] + "/compare/comparison.json"
    assert report["comparison"] == json.loads(storage.read_text(report["comparison_uri"]))
    md = storage.read_text(out["report_uri"])
    rl = report["comparison"]["metrics"]["rougeL"]
    assert f"{100 * rl['difference']:+.2f}" in md
    for label in ("base", "tuned"):
        rows = [json.loads(line) for line in storage.read_text(report["evaluations"][label]["results"]).splitlines()]
        mean = sum(r["scores"]["rougeL"] for r in rows if r["scores"]) / sum(1 for r in rows if r["scores"])
        assert mean == pytest.approx(report["evaluations"][label]["summary"]["rougeL"]["mean"])
    return report


def test_local_pipeline_tuned_beats_base_and_reruns_from_cache(tmp_path):
    config = {"local_root": str(tmp_path / "root"), "samples": 20, "local_train_budget_s": 40, "poll_interval": 1}
    state = sft_pipeline(config=config, return_state=True)
    out = state.result()
    report = _check_report_matches_files(out)
    rl = report["comparison"]["metrics"]["rougeL"]
    assert rl["ci_low"] > 0, rl  # a real LoRA tune beats the base scorer, CI above zero
    assert out["verdict"][-1].startswith("tuned beats base on ROUGE-L")
    _check_report_explains(out)
    _check_local_judge(out, report, state)

    state2 = sft_pipeline(config=config, return_state=True)
    assert state2.result()["comparison"] == out["comparison"]
    jobs = list((tmp_path / "root" / "work" / "jobs").iterdir())
    assert len(jobs) == 1  # no second tuning job
    states = task_states(state2, expect={"evaluate-model": 2, "compare-results": 1, "judge-pairs": 1})
    assert set(states["evaluate-model"]) == {"Cached"} and set(states["compare-results"]) == {"Cached"}
    assert set(states["judge-pairs"]) == {"Cached"}
    assert state2.result()["judgement"] == out["judgement"]


def _check_report_explains(out):
    """report.md opens with the verdict, shows the run's plots (the loss curve too) as images beside it, the examples
    that helped most from the test set's articles, and a local cost row that says it is free."""
    md = storage.read_text(out["report_uri"])
    run_dir = Path(out["report_uri"]).parent
    assert md.splitlines()[2].startswith("**Tuning helped: tuned beats base on ROUGE-L by ")
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", md)
    assert images[0] == "tuning/loss.png" and len(images) == 7 and all((run_dir / i).is_file() for i in images)
    assert md.count("### Helped most (") == 3 and "Article (excerpt; " in md
    assert re.search(r"\| cost \| estimate \$[0-9.]+ if billed by Vertex; local runs are free \|", md)


def _check_local_judge(out, report, state):
    """The judge section from the local judge (judge: auto on the local backend), honest about what it is, agreeing
    with ROUGE-L's direction on the embedded samples; every pair judged in both orders; a table artifact."""
    judge = report["judge"]
    assert judge["label"] == "local judge (embedding similarity, not an LLM)"
    s = judge["summary"]
    assert s["judged"] == s["pairs"] == 20 and s["errors"] == 0
    assert s["wins"] + s["ties"] + s["losses"] == 20
    assert s["direction_agrees_with_rouge"] is True and s["win_rate"] > 0.5, s
    assert s["ci_low"] <= s["win_rate"] <= s["ci_high"]
    assert s["order_disagreement_rate"] == 0  # an embedding judge is symmetric: both orders always agree
    assert s["requests"] == 40  # both orders of every pair
    md = storage.read_text(out["report_uri"])
    assert "## Pairwise judge: local judge (embedding similarity, not an LLM)" in md
    assert f"{100 * s['win_rate']:.1f}%" in md and "orders disagreed" in md and "same side as ROUGE-L" in md
    assert out["verdict"][0].startswith("judge (local judge (embedding similarity, not an LLM)): tuned wins")
    rows = [json.loads(line) for line in storage.read_text(judge["judgements_uri"]).splitlines()]
    assert len(rows) == 20 and all(r["forward"] == r["backward"] for r in rows)
    assert storage.read_bytes(judge["plot_uri"]).startswith(b"\x89PNG")
    assert {"judge-summary", "judge-report"} <= {a.key for a in flow_artifacts(state)}


def test_vertex_pipeline_caches_end_to_end(make_vertex_server, gcs_bucket, tmp_path, monkeypatch):
    """Caching end to end, and the tuned model's challenge of the champion: promoted first, not by an equal model,
    and each run's decision made once."""
    from tests.test_sweep_flow import step_sentences

    monkeypatch.setenv("SFTFLOW_VERTEX_ACCESS_TOKEN", TEST_TOKEN)  # never a flow parameter
    server = make_vertex_server(job_phases=(1.0, 2.0),  # every tuned model answers with the article's steps
                                tuned_answer=lambda hyper, epoch, article: " ".join(step_sentences(article)))
    paths = sample_paths()
    config = {"backend": "vertex", "project": server.project, "region": server.location, "bucket": gcs_bucket,
              "vertex_base_url": server.base_url, "poll_interval": 1,
              "local_root": str(tmp_path / "root"), "train_uri": paths["train"], "val_uri": paths["val"],
              "test_uri": paths["test"], "samples": 12, "concurrency": 4, "rpm": 6000,
              "count_tokens_rpm": 60_000}
    # The first run paces generation at 1 request/s, so the baseline (12 requests, ~11 s) is still
    # running when the tuning job is created; rpm is not part of any cache key, so reruns may go fast.
    state = sft_pipeline(config={**config, "rpm": 60}, return_state=True)
    out = state.result()
    _check_baseline_ran_while_the_job_trained(server)
    assert out["report_uri"] == f"{gcs_bucket}/runs/default/report.md"
    arts = flow_artifacts(state)
    progress = [a for a in arts if a.type == "progress"]
    assert len(progress) >= 2 and all(a.data == 100.0 for a in progress)  # both evaluations reported progress
    keys = {a.key for a in arts}
    assert {"sft-pipeline-report", "comparison-metrics", "eval-base-metrics", "eval-tuned-metrics"} <= keys
    _check_report_matches_files(out)
    _check_cost_section(out, keys)
    assert out["champion"]["promoted"] and out["champion"]["reason"] == (
        "no champion yet: default/e1-a4-lr1 becomes the first one")  # a significant win over the base first
    assert out["champion"]["alias"].endswith("@champion") and server.count("POST", ":mergeVersionAliases") == 1
    base_calls = server.count("POST", "gemini-2.5-flash:generateContent")
    tuned_calls = server.count("POST", "/endpoints/")
    assert base_calls == 12 and tuned_calls == 12
    assert server.count("POST", "/tuningJobs") == 1

    before = len(server.requests)
    again = sft_pipeline(config=config)
    assert len(server.requests) == before  # no model or tuning request at all
    assert again["comparison"] == out["comparison"]
    assert again["champion"]["reason"] == "default/e1-a4-lr1 is already the champion (#1)"

    # One hyperparameter changed: data and baseline reused, tuning and tuned evaluation redone; the first tuned
    # model, the champion, answers the same examples once more for the challenge, which the new one (answering
    # alike) does not win: not promoted, and the report says why.
    other = sft_pipeline(config={**config, "epochs": 2})
    assert server.count("POST", "/tuningJobs") == 2
    assert server.count("POST", "gemini-2.5-flash:generateContent") == base_calls
    assert server.count("POST", "/endpoints/") == 3 * tuned_calls
    decision = other["champion"]
    assert not decision["promoted"] and decision["seq"] == 2 and decision["reason"].startswith(
        "default/e2-a4-lr1 vs champion default/e1-a4-lr1 on ROUGE-L: +0.0 points")
    assert decision["reason"].endswith("so default/e1-a4-lr1 stays champion")
    assert f"## Champion\n\nnot promoted: {decision['reason']}" in storage.read_text(other["report_uri"])
    assert json.loads(storage.read_text(other["report_json_uri"]))["champion"] == decision
    before = len(server.requests)
    assert sft_pipeline(config={**config, "epochs": 2})["champion"] == decision  # decided once:
    assert len(server.requests) == before  # no request, no second history entry
    assert [e["event"] for e in champion.history(gcs_bucket)] == ["promoted", "kept"]


def _check_baseline_ran_while_the_job_trained(server):
    """README: "the baseline evaluates while the job trains" — read off the server's request log: some
    base-model requests arrived between the job's creation and the time it SUCCEEDED on the server's clock."""
    (create,) = [r for r in server.requests if r["method"] == "POST" and r["path"].endswith("/tuningJobs")]
    created, succeeded = create["time"], create["time"] + sum(server.job_phases)
    base = [r["time"] for r in server.requests if r["path"].endswith("/models/gemini-2.5-flash:generateContent")]
    during = [t for t in base if created <= t <= succeeded]
    assert during, (created, succeeded, base)
    tuned = [r["time"] for r in server.requests if "/endpoints/" in r["path"] and r["path"].endswith(":generateContent")]
    assert min(tuned) > succeeded  # the tuned model is asked only after its job succeeded


def _check_cost_section(out, artifact_keys):
    """report.json's cost: the job's billable tokens (what the server counted in the uploaded training rows × 1 epoch)
    priced at $5/1M next to the countTokens estimate; each evaluation's usage priced at 2.5 Flash's list price."""
    report = json.loads(storage.read_text(out["report_json_uri"]))
    spent = report["cost"]
    data_tokens = billable_tokens(storage.read_bytes(report["data"]["train"]), epochs=1)
    assert spent["tuning"]["billable_tokens"] == data_tokens > 0 and report["job"]["billable_tokens"] == data_tokens
    assert spent["tuning"]["billed_usd"] == pytest.approx(data_tokens * 5 / 1e6)
    assert spent["tuning"]["method"].startswith("countTokens (Vertex AI)") and spent["tuning"]["estimate_usd"] > 0
    (judged,) = [ev for ev in spent["evaluations"] if ev["estimated"]]  # the vertex judge: estimated tokens
    assert judged["label"] == "judge" and judged["priced_as"] == "gemini-2.0-flash" and judged["input_tokens"] > 0
    assert judged["usd"] == pytest.approx((judged["input_tokens"] * 0.15 + judged["output_tokens"] * 0.60) / 1e6)
    for ev in spent["evaluations"]:
        if ev["estimated"]:
            continue
        results = report["evaluations"][ev["label"]]["results"]
        rows = [json.loads(line) for line in storage.read_text(results).splitlines()]
        assert ev["input_tokens"] == sum(r["prompt_tokens"] for r in rows) > 0
        assert ev["usd"] == pytest.approx((ev["input_tokens"] * 0.30 + ev["output_tokens"] * 2.50) / 1e6)
    evaluations = sum(e["usd"] for e in spent["evaluations"])
    assert spent["total_usd"] == pytest.approx(spent["tuning"]["billed_usd"] + evaluations)
    assert "## Cost" in storage.read_text(out["report_uri"]) and "run-cost" in artifact_keys
