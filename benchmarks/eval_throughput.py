"""Evaluation throughput: the codelab's sequential loop vs `sftflow.evaluation.evaluate`.

Starts the Vertex-shaped test server in a subprocess (its own GIL) with a fixed answer latency,
then measures, in one run and against the same server and the real VertexGenerator:
  (a) the codelab pattern: generate one example at a time, then `time.sleep(1)`;
  (b) `evaluate` at concurrency C with an rpm that does not bind;
  (c) `evaluate` at rpm=600, to show the limiter holding the rate at ~10 requests/s.
Prints examples/s for each, the ratio (b)/(a) and (b) as a fraction of the ceiling
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
from sftflow.evaluation import evaluate  # noqa: E402
from sftflow.rouge import score_pair  # noqa: E402


# The test server's handler writes headers and body in two sends; without TCP_NODELAY,
# Nagle's algorithm + the client's delayed ACK add ~45 ms to every answer. Real Vertex does
# not do that, so by default the benchmark starts the server with Nagle disabled (a no-op
# once tests/servers/vertex_server.py sets `disable_nagle_algorithm = True` itself).
_NODELAY_MAIN = (
    "import sys; from tests.servers import vertex_server as v; "
    "v._Handler.disable_nagle_algorithm = True; v.main(sys.argv[1:])"
)


def start_server(latency: float, nodelay: bool = True) -> tuple[subprocess.Popen, str]:
    entry = ["-c", _NODELAY_MAIN] if nodelay else ["-m", "tests.servers.vertex_server"]
    proc = subprocess.Popen(
        [sys.executable, *entry, "--port", "0", "--latency", str(latency)],
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


def codelab_loop(gen, exs, params) -> float:
    """The codelab's evaluation loop: one request at a time, 1 s pause after each."""
    t0 = time.perf_counter()
    for ex in exs:
        out = gen.generate(ex.input_text, params)
        score_pair(ex.output_text, out.text)
        time.sleep(1)
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
    p.add_argument("--codelab-n", type=int, default=8)
    p.add_argument("--keep-nagle", action="store_true",
                   help="start the test server as is (adds ~45 ms per answer, see _NODELAY_MAIN)")
    args = p.parse_args()

    proc, url = start_server(args.latency, nodelay=not args.keep_nagle)
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
            a = codelab_loop(gen, exs[: args.codelab_n], params)
            rpm_free = 1e6
            b, b_err = ours(gen, exs, params, concurrency=args.concurrency, rpm=rpm_free, workdir=work, name="b")
            c, c_err = ours(gen, examples(60), params, concurrency=args.concurrency, rpm=600, workdir=work, name="c")
        ceiling_b = min(args.concurrency / args.latency, rpm_free / 60)
        ceiling_c = min(args.concurrency / args.latency, 600 / 60)
        print(f"server latency {args.latency:.3f} s (one request measured {per_request:.3f} s), "
              f"concurrency {args.concurrency}, {args.n} examples, Nagle {'on' if args.keep_nagle else 'off'}")
        print(f"(a) codelab loop (sequential + sleep 1 s), {args.codelab_n} examples: {a:6.2f} examples/s")
        print(f"(b) evaluate, rpm not binding:                     {b:6.2f} examples/s  (errors {b_err})")
        print(f"    ratio (b)/(a):                                 {b / a:6.1f}x   (target >= 20x)")
        print(f"    (b) / ceiling {ceiling_b:.0f}/s:                          {b / ceiling_b:6.1%}  (target >= 90%)")
        print(f"(c) evaluate, rpm=600, 60 examples:                {c:6.2f} examples/s  (errors {c_err}); "
              f"ceiling {ceiling_c:.0f}/s -> {c / ceiling_c:.1%}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
