"""Pairwise judge: time per 100 pairs against the test server, and what 100 pairs cost at list price.

Starts the Vertex-shaped test server in a subprocess (its own GIL) with a fixed answer latency (default
250 ms), builds 100 pairs from the embedded test set (baseline: the article's first 20 words, candidate:
its first sentence), and judges them with the real Vertex judge (google-cloud-aiplatform's
EvaluationServiceClient, REST) through `judge_pairs` — every pair in both orders, so 200 requests:
  (a) sequentially (concurrency 1, rpm not binding): what one request at a time costs;
  (b) at the default settings (concurrency 8, rpm 300): the limiter binds at 5 requests/s;
  (c) at concurrency 8 with an rpm that does not bind.
Prints seconds per 100 pairs for each, the ceiling min(C / latency, rpm / 60) requests/s, and the cost of
100 pairs: the requests' estimated tokens (characters / 4 + the template estimate, as sftflow.judging.vertex
counts them) at gemini-2.0-flash's list price (https://cloud.google.com/vertex-ai/generative-ai/pricing;
sftflow.cost.prices), the evaluation service's default judge model.

    .venv/bin/python benchmarks/judge_throughput.py [--latency 0.25] [--pairs 100]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.eval_throughput import start_server  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from sftflow.cost.prices import LIST_PRICES, PRICING_URL  # noqa: E402
from sftflow.data.samples import sample_paths  # noqa: E402
from sftflow.data.testset import read_test_csv  # noqa: E402
from sftflow.judging.pairs import Pair  # noqa: E402
from sftflow.judging.run import judge_pairs  # noqa: E402
from sftflow.judging.step import split_prompt  # noqa: E402
from sftflow.judging.vertex import DEFAULT_JUDGE_MODEL, VertexJudge  # noqa: E402
from tests.servers.vertex_server import TEST_TOKEN  # noqa: E402


def pairs(n: int) -> list[Pair]:
    exs = read_test_csv(sample_paths()["test"])
    out = []
    for k in range(n):
        ex = exs[k % len(exs)]
        instruction, article = split_prompt(ex.input_text)
        first = article.split(". ")[0] + "."
        out.append(Pair(id=f"{ex.id}-{k}", instruction=instruction, context=article,
                        baseline=" ".join(article.split()[:20]), candidate=first, reference=ex.output_text,
                        baseline_rouge_l=0.0, candidate_rouge_l=0.0))
    return out


def run(url: str, ps: list[Pair], concurrency: int, rpm: float) -> tuple[float, list]:
    spec = SimpleNamespace(project="test-project", region="us-central1", vertex_base_url=url, judge_model=None,
                           vertex_access_token=SecretStr(TEST_TOKEN), request_timeout=60)
    judge = VertexJudge(spec)
    judge.client()  # client creation and the SDK's import are not part of the judging time
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        judged = judge_pairs(judge, ps, checkpoint=Path(d) / "c.jsonl", concurrency=concurrency, rpm=rpm,
                             max_attempts=3)
        return time.perf_counter() - t0, judged


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latency", type=float, default=0.25)
    p.add_argument("--pairs", type=int, default=100)
    a = p.parse_args()
    proc, url = start_server(a.latency)
    try:
        ps = pairs(a.pairs)
        per100 = 100 / a.pairs
        print(f"{a.pairs} pairs, 2 requests each, server latency {a.latency * 1000:.0f} ms")
        for name, c, rpm in (("(a) sequential", 1, 1e9), ("(b) defaults: concurrency 8, rpm 300", 8, 300),
                             ("(c) concurrency 8, rpm not binding", 8, 1e9)):
            secs, judged = run(url, ps, c, rpm)
            assert all(j.error is None for j in judged), [j.error for j in judged if j.error][:3]
            ceiling = min(c / a.latency, rpm / 60)
            print(f"{name}: {secs * per100:.1f} s per 100 pairs ({2 * a.pairs / secs:.1f} requests/s; ceiling "
                  f"{ceiling:.1f}/s)")
        tin = sum(j.input_tokens for j in judged) * per100
        tout = sum(j.output_tokens for j in judged) * per100
        pin, pout = LIST_PRICES[DEFAULT_JUDGE_MODEL]
        usd = (tin * pin + tout * pout) / 1e6
        print(f"cost per 100 pairs (estimate): {tin:,.0f} input + {tout:,.0f} output tokens at {DEFAULT_JUDGE_MODEL}'s "
              f"${pin}/${pout} per 1M = ${usd:.4f} ({PRICING_URL}); the test server's explanations are short, so "
              "output is a floor")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
