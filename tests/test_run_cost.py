"""What a run cost: generation prices (batch-ready), evaluation token usage priced, the tuning job's
billable tokens next to its estimate; thinking tokens counted as billed output."""

from __future__ import annotations

import json

import pytest

from sftflow.cost import prices
from sftflow.cost import report as run_cost
from sftflow.config import Settings
from sftflow.errors import CheckpointError
from sftflow.evaluation.results import ExampleResult


def test_prices_list_override_local_and_unknown_with_batch_discount():
    flash = prices.price_for("gemini-2.5-flash", "vertex")
    assert (flash.input_per_million, flash.output_per_million, flash.source) == (0.30, 2.50, prices.PRICING_URL)
    assert flash.usd(1_000_000, 100_000) == pytest.approx(0.30 + 0.25)
    assert flash.usd(1_000_000, 100_000, batch=True) == pytest.approx((0.30 + 0.25) / 2)
    assert prices.price_for("publishers/google/models/gemini-2.5-pro", "vertex").output_per_million == 10.0
    mine = prices.price_for("gemini-2.5-flash", "vertex", {"gemini-2.5-flash": (1.0, 2.0)})
    assert (mine.input_per_million, mine.output_per_million) == (1.0, 2.0) and "generation_prices_usd" in mine.source
    assert prices.price_for("gemini-9-ultra", "vertex") is None  # unknown: never guessed
    assert prices.price_for("minilm-extractive", "local").usd(10**9, 10**9) == 0.0


def _rows(*pairs):
    return [ExampleResult(id=str(i), model="m", prompt_chars=1, reference="r", prompt_tokens=a, output_tokens=b)
            for i, (a, b) in enumerate(pairs)]


def test_run_cost_record_prices_evaluations_and_puts_billed_tuning_next_to_the_estimate():
    price = prices.price_for("gemini-2.5-flash", "vertex")
    base = run_cost.evaluation_cost("base", "gemini-2.5-flash", "gemini-2.5-flash",
                                    _rows((1000, 100), (3000, None), (None, 50)), price)
    assert (base.examples, base.input_tokens, base.output_tokens) == (3, 4000, 150)
    assert base.usd == pytest.approx((4000 * 0.30 + 150 * 2.50) / 1e6)
    unknown = run_cost.evaluation_cost("tuned", "projects/p/locations/l/endpoints/1", "gemini-9", _rows((10, 1)), None)
    assert unknown.usd is None and "generation_prices_usd" in unknown.source

    estimate = {"total_usd": 0.5, "billed_tokens": 100_000, "method": "countTokens (Vertex AI), gemini-2.5-flash",
                "price_source": prices.PRICING_URL}
    tuned = {"cost_estimate": estimate, "stats": {"billable_tokens": "120000"}}  # int64 as a string, as Vertex sends
    t = run_cost.tuning_cost(tuned, 5.0)
    assert (t.billable_tokens, t.billed_usd, t.estimate_usd) == (120_000, pytest.approx(0.6), 0.5)
    assert run_cost.tuning_cost({"cost_estimate": estimate, "stats": {}}, 5.0).billed_usd is None
    assert run_cost.tuning_cost({}, 5.0) is None

    rc = run_cost.RunCost(tuning=t, evaluations=(base,))
    assert rc.total_usd == pytest.approx(0.6 + base.usd)
    assert json.loads(json.dumps(rc.to_dict()))["total_usd"] == pytest.approx(rc.total_usd)
    md = rc.markdown()
    assert md.startswith("## Cost") and "| tuning | 120,000 billable | - | $0.50 (100,000 tokens) | $0.60 |" in md
    assert "| evaluate base (3 examples) | 4,000 | 150 |" in md and prices.PRICING_URL in md
    assert [r["step"] for r in rc.rows()] == ["tuning", "evaluate base"]
    # Before the job reports its billable tokens, the estimate stands in for it in the total.
    pending = run_cost.RunCost(tuning=run_cost.tuning_cost({"cost_estimate": estimate}, 5.0), evaluations=(base,))
    assert pending.total_usd == pytest.approx(0.5 + base.usd) and "| - |" in pending.markdown()
    assert "tuning at its estimate" in pending.markdown()
    assert run_cost.RunCost(tuning=None, evaluations=(unknown,)).total_usd is None
    # The local backend bills nothing: the estimate (what Vertex would charge) is shown, the cost is 0.
    local = run_cost.tuning_cost({"cost_estimate": {**estimate, "backend": "local"}}, 5.0)
    assert (local.billed_usd, local.estimate_usd, local.local) == (0.0, 0.5, True)
    assert "bills nothing" in run_cost.RunCost(tuning=local, evaluations=()).markdown()
    assert ("**Total: $0.00** (local runs are free; the tuning would cost an estimated $0.50 if billed by Vertex)."
            in run_cost.RunCost(tuning=local, evaluations=()).markdown())  # the report's cost row says the same


def test_run_cost_reads_results_files_last_record_per_id_wins(tmp_path):
    results = tmp_path / "results.jsonl"
    rec = {"model": "gemini-2.5-flash", "prompt_chars": 4, "reference": "r"}
    results.write_text("\n".join(json.dumps(r) for r in [
        {"id": "a", "prompt_tokens": 5, "output_tokens": 1, **rec},   # an errored attempt, later resumed
        {"id": "a", "prompt_tokens": 10, "output_tokens": 2, **rec},
        {"id": "b", "prompt_tokens": 20, "output_tokens": 4, **rec}]) + "\n")
    s = Settings(_env_file=None, backend="vertex", project="p", generation_prices_usd={"gemini-2.5-flash": (1e6, 0)})
    rc = run_cost.run_cost(s, {}, {"base": {"model": "gemini-2.5-flash", "results_uri": str(results)}})
    [e] = rc.evaluations
    assert (e.examples, e.input_tokens, e.output_tokens, e.usd) == (2, 30, 6, pytest.approx(30.0))
    [b] = run_cost.run_cost(s, {}, {"base": {"model": "gemini-2.5-flash", "results_uri": str(results)}},
                            batch={"base"}).evaluations
    assert b.batch and b.usd == pytest.approx(15.0) and "batch rate" in run_cost.RunCost(None, (b,)).markdown()
    # The one results reader's rules hold here too: a raw row that is not a result record is named, not summed.
    results.write_text(json.dumps({"id": "x", "prompt_tokens": 7}) + "\n" + results.read_text())
    with pytest.raises(CheckpointError, match=r"results\.jsonl:1: not a result record: missing field"):
        run_cost.run_cost(s, {}, {"base": {"model": "gemini-2.5-flash", "results_uri": str(results)}})


def test_thinking_tokens_count_as_billed_output(make_vertex_server, vertex_settings_for):
    from google.genai import types

    from sftflow.backends.base import GenerationParams
    from sftflow.backends.vertex import VertexGenerator
    from sftflow.backends.vertex_client import make_genai_client

    server = make_vertex_server()
    s = vertex_settings_for(server)
    prompt = "Summarize this article: the cat sat on the mat and slept all day long."
    gen = VertexGenerator(s, "gemini-2.5-flash").generate(prompt, GenerationParams(
        temperature=0.1, max_output_tokens=256, safety_threshold="BLOCK_ONLY_HIGH", timeout_s=30))
    client = make_genai_client(s)  # kept referenced: a collected client closes its connection pool
    usage = client.models.generate_content(
        model="gemini-2.5-flash", contents=prompt,
        config=types.GenerateContentConfig(temperature=0.1, max_output_tokens=256)).usage_metadata
    assert usage.thoughts_token_count > 0  # 2.5 Flash thinks by default
    assert gen.output_tokens == usage.candidates_token_count + usage.thoughts_token_count
