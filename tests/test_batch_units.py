"""Batch mode's small pieces: which mode runs, the request/prediction format, costs, terminal progress."""

from __future__ import annotations

import io
import json

import pytest

from sftflow.backends.base import GenerationParams
from sftflow.evaluation.batch.mode import choose_mode
from sftflow.evaluation.batch.requests import (
    ID_LABEL,
    id_label,
    parse_predictions,
    prompt_hash,
    requests_jsonl,
)
from sftflow.cli.main import build_parser
from sftflow.cli.mistakes import UsageError
from sftflow.config import ConfigError, Settings
from sftflow.data.testset import TestExample
from sftflow.infra.progress import TerminalProgress, fan_out, progress_line
from sftflow.cost.prices import price_for
from sftflow.cost.report import evaluation_cost, with_rates
from sftflow.evaluation.report import cost_line
from sftflow.evaluation.results import ExampleResult

PARAMS = GenerationParams()


def _settings(**kw) -> Settings:
    return Settings(_env_file=None, **kw)


@pytest.mark.parametrize("kw,n,mode", [
    ({}, 10_000, "online"),  # local: always online
    ({"eval_mode": "batch"}, 10, "online"),  # local has no batch prediction
    ({"backend": "vertex", "project": "p", "bucket": "b"}, 499, "online"),
    ({"backend": "vertex", "project": "p", "bucket": "b"}, 500, "batch"),
    ({"backend": "vertex", "project": "p"}, 5000, "online"),  # auto without a bucket: online
    ({"backend": "vertex", "project": "p", "bucket": "b", "eval_mode": "online"}, 5000, "online"),
    ({"backend": "vertex", "project": "p", "bucket": "b", "eval_mode": "batch"}, 3, "batch"),
    ({"backend": "vertex", "project": "p", "bucket": "b", "batch_min_examples": 20}, 20, "batch"),
])
def test_choose_mode(kw, n, mode):
    assert choose_mode(_settings(**kw), n) == mode


def test_batch_mode_without_a_bucket_is_a_one_line_error():
    with pytest.raises(ConfigError, match="^bucket: required for eval_mode=batch"):
        choose_mode(_settings(backend="vertex", project="p", eval_mode="batch"), 10)


def test_cli_mode_flag_sets_eval_mode():
    args = build_parser().parse_args(["evaluate", "--mode", "batch"])
    assert args.eval_mode == "batch"
    with pytest.raises(UsageError, match=r"--mode: invalid choice: 'fast' \(choose from 'auto', 'batch', 'online'\)"):
        build_parser().parse_args(["pipeline", "--mode", "fast"])


def test_request_lines_carry_the_id_and_predictions_match_in_any_order():
    exs = [TestExample("a-1", "article: one. two", "one", 2), TestExample("B 2", "article: three", "three", 3)]
    text = requests_jsonl(exs, PARAMS, lambda ex: ex.input_text)
    lines = [json.loads(x) for x in text.splitlines()]
    assert [x["request"]["labels"][ID_LABEL] for x in lines] == ["a-1", id_label("B 2")]
    assert id_label("B 2").startswith("h") and len(id_label("B 2")) <= 63
    ok = {"candidates": [{"content": {"role": "model", "parts": [{"text": "three"}]}, "finishReason": "STOP"}],
          "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 1}}
    no_labels = {"contents": lines[1]["request"]["contents"]}  # matched by its prompt's hash
    out = "\n".join([
        json.dumps({"status": "", "request": no_labels, "response": ok}),
        json.dumps({"status": "Internal error", "request": lines[0]["request"]}),
        json.dumps({"status": "", "request": {"contents": [{"parts": [{"text": "stranger"}]}]}, "response": ok}),
        "{not json",
    ])
    by_label = {id_label(ex.id): ex.id for ex in exs}
    preds, unmatched = parse_predictions(out, by_label, {prompt_hash(ex.input_text): ex.id for ex in exs})
    assert unmatched == 2
    assert [(p.id, p.generation.text if p.generation else None, p.status) for p in preds] == [
        ("B 2", "three", None), ("a-1", None, "Internal error")]
    assert preds[0].generation.prompt_tokens == 4


def test_batch_costs_half_of_online_at_the_run_costs_prices():
    rs = [ExampleResult("1", "m", 10, "r", output="x", prompt_tokens=1_000_000, output_tokens=100_000),
          ExampleResult("2", "m", 10, "r", error="boom")]
    price = price_for("gemini-2.5-flash", "vertex")  # $0.30 in / $2.50 out per 1M (list price)
    rows = rs
    cost = with_rates(evaluation_cost("base", "m", "gemini-2.5-flash", rows, price, batch=True), price)
    assert cost["online_usd"] == pytest.approx(0.55) and cost["usd"] == cost["batch_usd"] == pytest.approx(0.275)
    line = cost_line(cost)
    assert "$0.28 at batch rates (online would have been $0.55)" in line and "gemini-2.5-flash" in line
    assert cost["source"].startswith("https://")
    online = with_rates(evaluation_cost("base", "m", "gemini-2.5-flash", rows, price), price)
    assert online["usd"] == pytest.approx(0.55) and "batch would have been $0.28" in cost_line(online)
    unknown = with_rates(evaluation_cost("base", "m", "no-such-model", rows, None, batch=True), None)
    assert unknown["usd"] is None and cost_line(unknown).startswith("Generation cost: unknown (no price for")


def test_terminal_progress_logs_every_10_percent_or_10_seconds_and_draws_a_bar():
    now = [0.0]
    logged: list[str] = []
    stream = io.StringIO()
    p = TerminalProgress("base", logged.append, stream=stream, bar=True, clock=lambda: now[0])
    for done in range(0, 101):
        now[0] = done * 0.5
        p(done, 100, {"errors": 1, "retries": 2})
    assert 10 <= len(logged) <= 16  # every 10 % (the 10 s rule adds a few), not once per example
    assert logged[-1].startswith("base: 100/100 (100%)") and "1 errors, 2 retries" in logged[-1]
    assert "ETA" in logged[5] and "[###" in stream.getvalue() and stream.getvalue().endswith("\n")

    quiet: list[str] = []
    slow = TerminalProgress("x", quiet.append, bar=False, clock=lambda: now[0], stream=io.StringIO())
    now[0] = 0.0
    slow(0, 1000, {})
    now[0] = 11.0
    slow(1, 1000, {})  # 0.1 %, but 11 s since the last line
    assert len(quiet) == 2


def test_progress_line_shows_the_batch_job():
    line = progress_line("tuned", 40, 100, {"mode": "batch", "state": "RUNNING", "round": 1, "succeeded": 40,
                                            "failed": 3, "incomplete": 57}, 2.0)
    assert line == ("tuned: 40/100 (40%), 2.0/s, 0 errors, 0 retries, ETA 30s; batch job round 1 RUNNING: "
                    "40 answered, 3 failed, 57 to go")
    calls = []
    fan_out(None, lambda d, t, i: calls.append((d, t, i)))(1, 2, None)
    assert calls == [(1, 2, {})]


def test_polling_a_batch_job_backs_off_through_faults_then_gives_up_naming_it():
    from sftflow.evaluation.batch.run import wait_for_job
    from sftflow.errors import TransientError

    class Down:
        def get(self, name):
            raise TransientError("503 UNAVAILABLE")

    sleeps: list[float] = []
    with pytest.raises(TransientError, match=r"polling batch job b/1 failed 4 times in a row; the job was left "
                                             r"running: 503 UNAVAILABLE"):
        wait_for_job(Down(), "b/1", poll_interval=3, pending_timeout=3600, sleep=sleeps.append,
                     max_transient_failures=3)
    assert sleeps == [1.0, 2.0, 3.0]  # from 1 s, doubling, capped at poll_interval
