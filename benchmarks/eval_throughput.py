"""Evaluation throughput: sequential loops (the codelab's, and one without its pause) vs `evaluate`.

Starts the Vertex-shaped test server in a subprocess (its own GIL) with a fixed answer latency,
then measures, in one run and against the same server and the real VertexGenerator:
  (a) the codelab pattern: generate one example at a time, then `time.sleep(1)`;
  (s) the same sequential loop without the pause: what concurrency alone is measured against;
  (b) `evaluate` at concurrency C with an rpm that does not bind;
  (c) `evaluate` at rpm=600, to show the limiter holding the rate at ~10 requests/s.
Prints examples/s for each, the ratios (b)/(a) and (b)/(s) (the second is the honest gain of
concurrency; the first also counts the removed pause) and (b) as a fraction of the ceiling
min(C / latency, rpm / 60).

    .venv/bin/python benchmarks/eval_throughput.py [--latency 0.25] [--concurrency 16] [--n 160]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sftflow.backends.base import GenerationParams  # noqa: E402
from sftflow.backends.vertex import VertexGenerator  # noqa: E402
from sftflow.config import Settings  # noqa: E402
from sftflow.data.samples import sample_paths  # noqa: E402
from sftflow.data.testset import read_test_csv  # noqa: E402
from sftflow.evaluation.engine import evaluate  # noqa: E402
from sftflow.evaluation.rouge import score_pair  # noqa: E402


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.servers.vertex_server", "--port", "0", "--latency", str(latency)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    url = proc.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        proc.kill()
        raise RuntimeError(f"test server did not start (first line: {url!r})")
    return proc, url


def examples(n: int):
    """n examples with distinct ids, reusing the sample test set cyclically."""
    base = read_test_csv(sample_paths()["test"])
    return [replace(base[i % len(base)], id=f"{base[i % len(base)].id}-{i // len(base)}") for i in range(n)]


def round_trip_floor(gen, ex, params, n: int = 10) -> float:
    """Median seconds per request above the server's configured latency (transport + SDK)."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        gen.generate(ex.input_text, params)
        times.append(time.perf_counter() - t0)
    return sorted(times)[n // 2]


def sequential_loop(gen, exs, params, pause: float) -> float:
    """One request at a time, scored, then `pause` seconds (the codelab sleeps 1 s after each)."""
    t0 = time.perf_counter()
    for ex in exs:
        out = gen.generate(ex.input_text, params)
        score_pair(ex.output_text, out.text)
        if pause:
            time.sleep(pause)
    return len(exs) / (time.perf_counter() - t0)


def ours(gen, exs, params, *, concurrency: int, rpm: float, workdir: Path, name: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    res = evaluate(gen, exs, params=params, checkpoint=workdir / f"{name}.jsonl", concurrency=concurrency,
                   rpm=rpm, max_attempts=3)
    elapsed = time.perf_counter() - t0
    return len(exs) / elapsed, sum(r.error is not None for r in res)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latency", type=float, default=0.25)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--n", type=int, default=160)
    p.add_argument("--codelab-n", type=int, default=8, help="examples for the codelab loop (1 s pause each)")
    p.add_argument("--sequential-n", type=int, default=24, help="examples for the loop without the pause")
    args = p.parse_args()

    proc, url = start_server(args.latency)
    try:
        settings = Settings(backend="vertex", project="test-project", bucket="b", vertex_base_url=url,
                            vertex_access_token="t")
        gen = VertexGenerator(settings, "gemini-2.5-flash")
        params = GenerationParams()
        exs = examples(args.n)
        gen.generate(exs[0].input_text, params)  # warm up the connection pool for both
        per_request = round_trip_floor(gen, exs[0], params)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            a = sequential_loop(gen, exs[: args.codelab_n], params, pause=1.0)
            seq = sequential_loop(gen, exs[: args.sequential_n], params, pause=0.0)
            rpm_free = 1e6
            b, b_err = ours(gen, exs, params, concurrency=args.concurrency, rpm=rpm_free, workdir=work, name="b")
            c, c_err = ours(gen, examples(60), params, concurrency=args.concurrency, rpm=600, workdir=work, name="c")
        ceiling_b = min(args.concurrency / args.latency, rpm_free / 60)
        ceiling_c = min(args.concurrency / args.latency, 600 / 60)
        print(f"server latency {args.latency:.3f} s (one request measured {per_request:.3f} s), "
              f"concurrency {args.concurrency}, {args.n} examples")
        rows = [
            (f"(a) codelab loop (sequential + sleep 1 s), {args.codelab_n} examples", f"{a:6.2f} examples/s"),
            (f"(s) sequential loop, no sleep, {args.sequential_n} examples", f"{seq:6.2f} examples/s"),
            ("(b) evaluate, rpm not binding", f"{b:6.2f} examples/s  (errors {b_err})"),
            ("    ratio (b)/(a), concurrency + no pause", f"{b / a:6.1f}x   (target >= 20x)"),
            ("    ratio (b)/(s), concurrency alone", f"{b / seq:6.1f}x   (at most {args.concurrency}x)"),
            (f"    (b) / ceiling {ceiling_b:.0f}/s", f"{b / ceiling_b:6.1%}  (target >= 90%)"),
            ("(c) evaluate, rpm=600, 60 examples",
             f"{c:6.2f} examples/s  (errors {c_err}); ceiling {ceiling_c:.0f}/s -> {c / ceiling_c:.1%}"),
        ]
        for label, value in rows:
            print(f"{label + ':':<56}{value}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
