"""Online vs batch evaluation, side by side in one run: examples per second and dollars per 1,000 examples.

Starts the GCS emulator and the Vertex-shaped test server in this process, then evaluates the same
N examples (the sample test set, cycled) twice through the real google-genai SDK:
  online: `evaluate` at `--rpm` requests/minute (the per-minute quota is what bounds it in real use)
          with `--latency` seconds per answer and concurrency 8;
  batch:  `evaluate_batch`, one job that the server keeps PENDING `--pending` s and RUNNING `--running` s.
Both are timed end to end (batch includes writing the input, polling at 1 s and reading the output).
Dollars come from the answers' token counts priced as the run cost prices them (sftflow.cost.prices: the
model's list price or `generation_prices_usd`; batch at the batch rate). The batch times are the test
server's simulation, not Vertex's: a real job queues minutes to hours ("typically within 24 h"); what
carries over is the price ratio, and that batch time does not grow with the rpm quota. Prints one table. Keep the run under a minute:

    .venv/bin/python benchmarks/batch_vs_online.py [--n 200] [--rpm 600] [--pending 3] [--running 6]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sftflow.infra import gcs as gcs_client  # noqa: E402
from sftflow.evaluation.batch.jobs import VertexBatchJobs  # noqa: E402
from sftflow.evaluation.batch.run import BatchOptions, evaluate_batch  # noqa: E402
from sftflow.backends.base import GenerationParams  # noqa: E402
from sftflow.backends.vertex import VertexGenerator  # noqa: E402
from sftflow.config import Settings  # noqa: E402
from sftflow.data.samples import sample_paths  # noqa: E402
from sftflow.data.testset import read_test_csv  # noqa: E402
from sftflow.evaluation.engine import evaluate  # noqa: E402
from sftflow.cost.prices import price_for  # noqa: E402
from sftflow.cost.report import evaluation_cost  # noqa: E402
from tests.servers.vertex_server import VertexTestServer  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--rpm", type=float, default=600.0)
    p.add_argument("--latency", type=float, default=0.2)
    p.add_argument("--pending", type=float, default=3.0)
    p.add_argument("--running", type=float, default=6.0)
    a = p.parse_args()

    from gcp_storage_emulator.server import create_server

    gport = _port()
    gcs = create_server("127.0.0.1", gport, in_memory=True)
    gcs.start()
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{gport}"
    gcs_client.reset_clients()
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    server = None
    try:
        gcs_client.client().create_bucket(bucket)
        server = VertexTestServer(latency_s=a.latency, gcs_url=f"http://127.0.0.1:{gport}", require_token="bench-token").start()
        server.batch.timeline = (("PENDING", a.pending), ("RUNNING", a.running))
        s = Settings(_env_file=None, backend="vertex", project=server.project, region=server.location,
                     bucket=f"gs://{bucket}", vertex_base_url=server.base_url, vertex_access_token="bench-token")
        base = read_test_csv(sample_paths()["test"])
        exs = [replace(base[i % len(base)], id=f"{base[i % len(base)].id}-{i // len(base)}") for i in range(a.n)]
        params = GenerationParams()
        tmp = Path(tempfile.mkdtemp(prefix="bench-batch-"))

        t0 = time.perf_counter()
        online = evaluate(VertexGenerator(s, s.base_model), exs, params=params, checkpoint=tmp / "online.jsonl",
                          concurrency=8, rpm=a.rpm, max_attempts=3)
        t_online = time.perf_counter() - t0

        t0 = time.perf_counter()
        batch, _ = evaluate_batch(VertexBatchJobs(s), exs, model=s.base_model, batch_model=s.base_model,
                                  params=params, checkpoint=tmp / "batch.jsonl",
                                  options=BatchOptions(root=f"gs://{bucket}/bench/batch", poll_interval=1.0))
        t_batch = time.perf_counter() - t0
        assert [r.output for r in online] == [r.output for r in batch], "online and batch answers differ"

        price = price_for(s.base_model, s.backend, s.generation_prices_usd)
        rows = []
        for name, results, secs in (("online", online, t_online), ("batch", batch, t_batch)):
            cost = evaluation_cost(name, s.base_model, s.base_model, [r.to_dict() for r in results], price,
                                   batch=name == "batch")
            rows.append((name, len(results) / secs, secs, 1000 * cost.usd / len(results)))
        print(f"{a.n} examples; online at {a.rpm:g} rpm, {a.latency:g} s/answer, concurrency 8; batch job simulated "
              f"{a.pending:g} s PENDING + {a.running:g} s RUNNING (test server, not Vertex's queue)")
        print(f"{'mode':8}{'examples/s':>12}{'seconds':>10}{'$ / 1,000 examples':>22}")
        for name, rate, secs, usd in rows:
            print(f"{name:8}{rate:12.1f}{secs:10.1f}{usd:22.4f}")
        print(f"batch/online: {rows[1][1] / rows[0][1]:.2f}x examples/s, {rows[1][3] / rows[0][3]:.2f}x dollars "
              f"(prices: {s.base_model} ${price.input_per_million:g} in / ${price.output_per_million:g} out per 1M "
              f"tokens, batch discount {price.batch_discount:.0%}, {price.source}); identical answers: yes")
    finally:
        if server is not None:
            server.stop()
        gcs.stop()


if __name__ == "__main__":
    main()
