"""The pairwise judge (sftflow.judging): the both-orders rule, the Vertex judge against the test server's
evaluateInstances (requests checked against Google's discovery document; both orders asked; a position-biased
autorater does not change the verdict), faults retried with Retry-After, errors against max_error_rate, a kill
and rerun asking only the missing pairs, and the judge as the sweep's and champion's promotion metric."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import SecretStr

from sftflow.data.testset import read_test_csv
from sftflow.errors import EvaluationFailed
from sftflow.evaluation.results import ExampleResult, results_to_jsonl
from sftflow.evaluation.rouge import score_pair
from sftflow.judging import summary
from sftflow.judging.pairs import JudgedPair, Pair, both_orders, side_of
from sftflow.judging.run import JudgedPairs, judge_pairs
from sftflow.judging.step import JudgeSpec, estimate_note, judge_and_save, split_prompt
from sftflow.judging.vertex import VertexJudge, request_body
from sftflow.records import Evaluation
from sftflow.selection import champion, leaderboard
from sftflow.selection.sweep import build_and_save_leaderboard
from tests.servers.vertex_judge import check_schema
from tests.servers.vertex_server import TEST_TOKEN, VertexTestServer

ROOT = Path(__file__).resolve().parents[1]
REQUEST = "GoogleCloudAiplatformV1beta1EvaluateInstancesRequest"


# --------------------------------------------------------------------------- data


def article(i: int) -> str:
    return (f"Gardeners in town {i} plant tomatoes early. They water the tomatoes every morning. "
            f"Neighbours {i} share seeds and tools. Rain fell late that year.")


REFERENCE = "Gardeners plant tomatoes early and water them every morning."


CLOSE, FAR = "Gardeners plant tomatoes early and water them every morning.", "Rain fell late that year."


def examples_files(tmp_path: Path, n: int, answers: dict[str, Any] | None = None) -> dict[str, str]:
    """A test CSV of n articles and one results file per {name: answer, or answer(i)} (default: base far from the
    reference, cand close to it): {"test": path, name: path}."""
    answers = answers or {"base": FAR, "cand": CLOSE}
    test = tmp_path / "test.csv"
    with open(test, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["input_text", "output_text"])
        for i in range(n):
            w.writerow([f"Provide a summary of the following article:\n\n{article(i)}", REFERENCE])
    ids = [ex.id for ex in read_test_csv(str(test))]
    out = {"test": str(test)}
    for name, answer in answers.items():
        texts = [answer(k) if callable(answer) else answer for k in range(n)]
        rows = [ExampleResult(id=i, model=name, prompt_chars=10, reference=REFERENCE, output=text,
                              scores=score_pair(REFERENCE, text)) for i, text in zip(ids, texts)]
        path = tmp_path / f"{name}.jsonl"
        path.write_text(results_to_jsonl(rows))
        out[name] = str(path)
    return out


def spec_for(server: VertexTestServer, tmp_path: Path, **kw) -> JudgeSpec:
    values = dict(judge="vertex", judge_model=None, judge_samples=100, project=server.project,
                  region=server.location, vertex_base_url=server.base_url, seed=0, work_dir=tmp_path / "work",
                  concurrency=4, rpm=60_000, max_attempts=4, max_error_rate=0.0,
                  vertex_access_token=SecretStr(TEST_TOKEN))
    return JudgeSpec(**(values | kw))


def make_pairs(n: int) -> list[Pair]:
    """n pairs: the candidate answers close to the reference, the baseline with the article's last sentence."""
    return [Pair(id=f"p{i:03d}", instruction="Provide a summary of the following article:", context=article(i),
                 baseline="Rain fell late that year.", candidate=f"Gardeners plant tomatoes early ({i}).",
                 reference=REFERENCE, baseline_rouge_l=0.1, candidate_rouge_l=0.6) for i in range(n)]


def judge_requests(server: VertexTestServer) -> list[dict]:
    return [r for r in server.requests if r["path"].endswith(":evaluateInstances")]


# --------------------------------------------------------------------------- the rule


def test_a_side_wins_only_when_both_orders_name_it():
    # as given the candidate is `prediction`; swapped the baseline is
    assert side_of("CANDIDATE", swapped=False) == "candidate" and side_of("CANDIDATE", swapped=True) == "baseline"
    assert side_of("BASELINE", swapped=False) == "baseline" and side_of("BASELINE", swapped=True) == "candidate"
    assert side_of("TIE", swapped=True) == "tie"
    assert both_orders("candidate", "candidate") == ("candidate", False)
    assert both_orders("baseline", "baseline") == ("baseline", False)
    assert both_orders("candidate", "baseline") == ("tie", True)  # a judge that always picks the first answer
    assert both_orders("candidate", "tie") == ("tie", True)
    with pytest.raises(Exception, match="PAIRWISE_CHOICE_UNSPECIFIED"):
        side_of("PAIRWISE_CHOICE_UNSPECIFIED", swapped=False)


def test_summary_win_rate_ci_agreement_and_worst_examples():
    def jp(i, verdict, diff, disagree=False):
        return JudgedPair(id=f"e{i}", judge="j", verdict=verdict, forward=verdict, backward=verdict,
                          orders_disagree=disagree, baseline_rouge_l=0.5, candidate_rouge_l=0.5 + diff)

    judged = ([jp(i, "candidate", 0.1) for i in range(6)] + [jp(6, "tie", 0.0, True), jp(7, "baseline", 0.3),
              jp(8, "candidate", -0.4), jp(9, "baseline", -0.05)])
    s = summary.summarize(judged)
    assert (s["wins"], s["ties"], s["losses"]) == (7, 1, 2)
    assert s["win_rate"] == pytest.approx(7.5 / 10) and s["ci_low"] < 0.75 < s["ci_high"]
    assert s["order_disagreement_rate"] == pytest.approx(0.1)
    assert s["rouge_agreement_rate"] == pytest.approx(8 / 10)  # e7 and e8 pick the other side than ROUGE-L
    assert [p.id for p in summary.most_disagreeing(judged)] == ["e8", "e7"]  # the largest ROUGE-L gap first


def test_split_prompt_takes_the_article_after_the_codelab_instruction():
    assert split_prompt("Summarize the following article:\n\nA b. C d.") == (
        "Summarize the following article:", "A b. C d.")
    assert split_prompt("no shape here") == ("no shape here", "no shape here")


# --------------------------------------------------------------------------- vertex judge on the test server


def test_request_names_are_the_discovery_documents():
    pair = make_pairs(1)[0]
    body = request_body(pair.orders()[0], judge_model="projects/p/locations/l/publishers/google/models/m")
    assert check_schema(REQUEST, body) == []
    assert body["autoraterConfig"]["flipEnabled"] is False  # both orders are asked by sftflow, one per request
    bad = json.loads(json.dumps(body).replace('"baselinePrediction"', '"baseline_answer"'))
    problems = check_schema(REQUEST, bad)
    assert ("pairwiseSummarizationQualityInput.instance.baseline_answer" in [p for p, _ in problems]
            and "pairwiseSummarizationQualityInput.instance.baselinePrediction" in [p for p, _ in problems])


def test_server_refuses_an_off_description_request_naming_the_field():
    with VertexTestServer() as server:
        body = json.dumps({"pairwiseSummarizationQualityInput": {"metricSpec": {"useReference": "yes"},
                                                                  "instance": {"instruction": "x"}}}).encode()
        req = urllib.request.Request(f"{server.base_url}/v1beta1/{server.parent}:evaluateInstances", data=body,
                                     headers={"Authorization": f"Bearer {TEST_TOKEN}", "Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=10)
    assert info.value.code == 400
    text = info.value.read().decode()
    assert "use_reference" in text or "useReference" in text


@pytest.mark.parametrize("bias", [0.0, 0.4])
def test_every_pair_is_asked_in_both_orders_and_position_bias_does_not_change_the_verdict(tmp_path, bias):
    n = 16
    with VertexTestServer() as server:
        server.judging.position_bias = bias
        judged = judge_pairs(VertexJudge(spec_for(server, tmp_path)), make_pairs(n), checkpoint=tmp_path / "c.jsonl",
                             concurrency=4, rpm=60_000, max_attempts=3)
        requests = judge_requests(server)
    assert len(requests) == 2 * n and all(r["status"] == 200 for r in requests)  # valid by the description
    asked = {(r["body"]["pairwiseSummarizationQualityInput"]["instance"]["context"],
              r["body"]["pairwiseSummarizationQualityInput"]["instance"]["prediction"]) for r in requests}
    for p in make_pairs(n):
        assert {(p.context, p.candidate), (p.context, p.baseline)} <= asked  # both orders of every pair
    s = summary.summarize(judged)
    assert s["losses"] == 0 and s["ci_low"] > 0.5, s  # the candidate is better: a win whatever the bias
    biased_calls = sum(a["biased"] for a in server.judging.asked)
    if bias == 0:
        assert s["wins"] == n and s["orders_disagree"] == 0
    else:
        # a biased request sides with the answer shown first: in the swapped order that is the (better)
        # candidate anyway, as given it is the baseline -> that pair's orders disagree and it is a tie, never a loss
        assert biased_calls > 0 and 0 < s["orders_disagree"] <= biased_calls
        assert s["ties"] == s["orders_disagree"] and s["wins"] == n - s["ties"]


def test_429_with_retry_after_and_500_are_retried(tmp_path):
    slept: list[float] = []
    with VertexTestServer() as server:
        server.add_prompt_fault(article(1), 429, times=1, retry_after="2")
        server.add_prompt_fault(article(2), 500, times=2)
        judged = judge_pairs(VertexJudge(spec_for(server, tmp_path)), make_pairs(4), checkpoint=tmp_path / "c.jsonl",
                             concurrency=2, rpm=60_000, max_attempts=4, sleep=slept.append, backoff_base=0.01)
        statuses = [r["status"] for r in judge_requests(server)]
    assert all(p.error is None and p.verdict == "candidate" for p in judged)
    assert statuses.count(429) == 1 and statuses.count(500) == 2 and statuses.count(200) == 8
    assert max(slept) >= 2.0  # the server's Retry-After was honoured


def test_errored_pairs_count_against_max_error_rate_and_are_asked_again(tmp_path):
    files = examples_files(tmp_path, 6)
    out_dir = str(tmp_path / "out")
    with VertexTestServer() as server:
        server.add_prompt_fault(article(3), 404)  # permanent: not retried
        with pytest.raises(EvaluationFailed, match=r"1/6 examples: 404"):
            judge_and_save(spec_for(server, tmp_path), files["base"], files["cand"], files["test"], out_dir)
        kept = judge_and_save(spec_for(server, tmp_path, max_error_rate=0.2), files["base"], files["cand"],
                              files["test"], out_dir)
        assert kept.errors and kept.summary["errors"] == 1 and kept.summary["judged"] == 5
        server.clear_prompt_faults()
        before = len(judge_requests(server))
        fixed = judge_and_save(spec_for(server, tmp_path, max_error_rate=0.2), files["base"], files["cand"],
                               files["test"], out_dir)
        assert len(judge_requests(server)) - before == 2  # only the errored pair, both orders
    assert not fixed.errors and fixed.summary["wins"] == 6
    assert fixed.cost["priced_as"] == "gemini-2.0-flash" and fixed.cost["input_tokens"] > 0
    md = Path(fixed.report_uri).read_text()
    assert "Vertex AI pairwise summarization quality autorater" in md and "95% bootstrap CI" in md


_CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from tests.test_judge import child_run
    child_run({url!r}, {ckpt!r}, {n})
""")


def child_run(url: str, ckpt: str, n: int) -> list[JudgedPair]:
    spec = SimpleNamespace(project="test-project", region="us-central1", vertex_base_url=url, judge_model=None,
                           vertex_access_token=SecretStr(TEST_TOKEN), request_timeout=30)
    return judge_pairs(VertexJudge(spec), make_pairs(n), checkpoint=ckpt, concurrency=4, rpm=1e6, max_attempts=3)


@pytest.mark.slow
def test_a_kill_mid_judging_loses_nothing_and_a_rerun_asks_only_the_missing_pairs(tmp_path):
    n, ckpt = 30, tmp_path / "c.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with VertexTestServer(latency_s=0.1) as server:
        child = subprocess.Popen([sys.executable, "-c", _CHILD.format(root=str(ROOT), url=server.base_url,
                                                                       ckpt=str(ckpt), n=n)],
                                 cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # kill once part of the pairs are checkpointed
            if ckpt.exists() and len(ckpt.read_bytes().splitlines()) >= 8:
                break
            if child.poll() is not None:
                pytest.fail(f"child ended early: {child.stderr.read().decode()[-2000:]}")
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait()
    done = set(JudgedPairs(ckpt).load())
    assert 8 <= len(done) < n
    with VertexTestServer() as again:  # a fresh server: its log holds the rerun's requests alone
        judged = child_run(again.base_url, str(ckpt), n)
        asked = {r["body"]["pairwiseSummarizationQualityInput"]["instance"]["context"] for r in judge_requests(again)}
        assert len(judge_requests(again)) == 2 * (n - len(done))  # both orders of each missing pair, once
        assert asked == {p.context for p in make_pairs(n) if p.id not in done}
        before = len(again.requests)
        assert child_run(again.base_url, str(ckpt), n) == judged  # nothing changed: nothing asked
        assert len(again.requests) == before
    assert [p.id for p in judged] == [p.id for p in make_pairs(n)] and all(p.verdict == "candidate" for p in judged)


# --------------------------------------------------------------------------- the judge promotes


def test_sweep_by_judge_crowns_the_configuration_the_judge_prefers_and_a_tie_crowns_none(tmp_path):
    """Configuration `rouge` wins on ROUGE-L; the judge prefers `judged` (its answers mention the rain): ranked by
    the judge, `judged` is crowned. An autorater that calls every pair a tie crowns none."""
    # 16 examples: with fewer, tied differences send scipy's Wilcoxon to a slow exact permutation test
    files = examples_files(tmp_path, 16, {"base": "Neighbours share seeds and tools.",
                                          "rouge": lambda i: CLOSE + " Indeed" * i,
                                          "judged": FAR})  # `judged` answers the article's last sentence
    base = Evaluation(label="base", model="base", results_uri=files["base"], report_uri="-", plot_uri="-",
                      summary={"rougeL": {"mean": 0.0}}, counts={})
    models = [{"label": label, "hyperparameters": {}, "job": None, "key": None, "tuned_model": None,
               "endpoint": f"endpoints/{label}", "cost_usd": 1.0, "results_uri": files[label]}
              for label in ("rouge", "judged")]
    with VertexTestServer() as server:
        spec = spec_for(server, tmp_path)

        def judge(b: str, m: str, label: str) -> dict:
            return judge_and_save(spec, b, m, files["test"], str(tmp_path / "judge" / label)).summary

        rain = lambda inst: ("CANDIDATE" if "Rain" in inst["prediction"] and "Rain" not in inst["baselinePrediction"]  # noqa: E731
                             else "BASELINE" if "Rain" in inst["baselinePrediction"] else "TIE")
        server.judging.prefer = rain
        by_rouge = build_and_save_leaderboard(str(tmp_path / "r"), "r", base, models, grid={}, samples=16)
        by_judge = build_and_save_leaderboard(str(tmp_path / "j"), "j", base, models, grid={}, samples=16,
                                              metric="judge", judge=judge)
        server.judging.prefer = lambda inst: "TIE"
        tie = build_and_save_leaderboard(str(tmp_path / "t"), "t", base, models, grid={}, samples=16, metric="judge",
                                         judge=lambda b, m, label: judge(b, m, f"tie-{label}"))
    assert by_rouge.board["best"] == "rouge"
    assert by_judge.board["best"] == "judged" and by_judge.board["rank_metric"] == "judge"
    assert by_judge.board["best_reason"].startswith("judged: highest judge win rate vs base (100.0%)")
    assert tie.board["best"] is None and "50%" in tie.board["best_reason"]


def test_champion_by_judge_needs_the_ci_lower_bound_above_half_plus_margin():
    current = {"seq": 1, "model": {"label": "old"}}
    strong = {"win_rate": 0.8, "ci_low": 0.7, "ci_high": 0.9, "judged": 50}
    assert champion.decide_by_judge("new", None, None).promote  # no champion yet
    assert champion.decide_by_judge("new", current, strong).promote
    assert not champion.decide_by_judge("new", current, strong, margin=0.25).promote
    tie = {"win_rate": 0.52, "ci_low": 0.45, "ci_high": 0.6, "judged": 50}
    decision = champion.decide_by_judge("new", current, tie)
    assert not decision.promote and decision.reason.endswith("so old stays champion")
    assert leaderboard.choose_best([], "judge") == (None, "no configuration was evaluated")


def test_the_cost_gate_names_the_vertex_judges_estimate(tmp_path):
    files = examples_files(tmp_path, 5)
    server = SimpleNamespace(project="p", location="us-central1", base_url="http://127.0.0.1:9")  # nothing is asked
    note = estimate_note(spec_for(server, tmp_path, judge_samples=4), files["test"])
    assert note.startswith("pairwise judge (vertex, gemini-2.0-flash): about $0.0") and "4 pairs × 2 orders" in note
    assert estimate_note(spec_for(server, tmp_path, judge="local"), files["test"]) is None
