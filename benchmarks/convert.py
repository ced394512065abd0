"""Conversion throughput and memory: sftflow's streaming converter vs a plain stdlib loop.

Generates synthetic chat JSONL (10k and 1M lines, ~300 bytes each) in a temp dir, then runs
each conversion in a fresh subprocess so peak RSS (VmHWM) is that run's alone, side by side
in this one run. Also runs the seeded shuffle at both sizes. Prints a table, the ratios and
whether peak RSS stayed flat (1M-line peak - 10k-line peak <= 50 MB).

    .venv/bin/python benchmarks/convert.py [--big 1000000] [--small 10000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLAT_MB = 50.0
ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- child side


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def plain_convert(src: str, dst: str) -> int:
    """What one would write without sftflow: parse, map roles, dump; no checks, not atomic."""
    n = 0
    with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as out:
        for line in f:
            msgs = json.loads(line)["messages"]
            system = [m["content"] for m in msgs if m["role"] == "system"]
            ex: dict = {}
            if system:
                ex["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
            ex["contents"] = [
                {"role": "model" if m["role"] == "assistant" else m["role"], "parts": [{"text": m["content"]}]}
                for m in msgs
                if m["role"] != "system"
            ]
            out.write(json.dumps(ex, ensure_ascii=False, separators=(",", ":")) + "\n")
            n += 1
    return n


def child(method: str, src: str, dst: str) -> None:
    sys.path.insert(0, str(ROOT))
    from sftflow.data.formats import convert_messages_file  # imported before timing

    t0 = time.perf_counter()
    if method == "plain":
        n = plain_convert(src, dst)
    else:
        seed = 1234 if method == "sftflow+shuffle" else None
        n = convert_messages_file(src, dst, limit=None, shuffle_seed=seed).examples_out
    secs = time.perf_counter() - t0
    print(json.dumps({"lines": n, "seconds": secs, "peak_mb": peak_rss_mb()}))


# --------------------------------------------------------------------------- parent side

WORDS = "the of and to in a is that for it as was with be by on not he this are or from summary étude".split()


def generate(path: Path, n: int, seed: int = 0) -> None:
    """~300-byte chat lines; every 4th has a system message."""
    rng = random.Random(seed)
    pool = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 40))) for _ in range(997)]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            text, summary = pool[i % 997], pool[(i * 7) % 997][:60]
            sys_msg = '{"role":"system","content":"Summarize the article."},' if i % 4 == 0 else ""
            f.write(
                f'{{"messages":[{sys_msg}{{"role":"user","content":"Article {i}: {text}"}},'
                f'{{"role":"assistant","content":"{summary}"}}]}}\n'
            )


def run_child(method: str, src: Path, dst: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", method, str(src), str(dst)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--big", type=int, default=1_000_000)
    ap.add_argument("--child", nargs=3, metavar=("METHOD", "SRC", "DST"))
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return 0

    start = time.perf_counter()
    methods = ("sftflow", "plain", "sftflow+shuffle")
    results: dict[tuple[str, int], dict] = {}
    with tempfile.TemporaryDirectory(prefix="sftflow-bench-") as tmp:
        d = Path(tmp)
        for n in (args.small, args.big):
            src = d / f"chat_{n}.jsonl"
            t0 = time.perf_counter()
            generate(src, n)
            size_mb = src.stat().st_size / 1e6
            print(f"generated {n:,} lines, {size_mb:.0f} MB ({size_mb * 1e6 / n:.0f} B/line) in "
                  f"{time.perf_counter() - t0:.1f}s", flush=True)
            for m in methods:  # interleaved so machine noise hits all methods alike
                dst = d / f"out_{m}_{n}.jsonl"
                results[(m, n)] = r = run_child(m, src, dst)
                print(f"  {m:16s} {n:>9,} lines  {r['seconds']:6.2f}s", flush=True)
            same = sha256(d / f"out_sftflow_{n}.jsonl") == sha256(d / f"out_plain_{n}.jsonl")
            print(f"  sftflow output == plain output (byte for byte): {same}", flush=True)
            for m in methods:
                (d / f"out_{m}_{n}.jsonl").unlink()
            src.unlink()

    print()
    print(f"{'method':16s} {'lines':>10s} {'seconds':>8s} {'lines/s':>10s} {'peak RSS MB':>12s}")
    for m in methods:
        for n in (args.small, args.big):
            r = results[(m, n)]
            print(f"{m:16s} {n:>10,} {r['seconds']:8.2f} {r['lines'] / r['seconds']:>10,.0f} {r['peak_mb']:12.1f}")
    print()
    rate = {k: v["lines"] / v["seconds"] for k, v in results.items()}
    for n in (args.small, args.big):
        print(f"throughput ratio sftflow / plain at {n:,} lines: {rate[('sftflow', n)] / rate[('plain', n)]:.2f}")
    print(f"throughput ratio shuffle / sftflow at {args.big:,} lines: "
          f"{rate[('sftflow+shuffle', args.big)] / rate[('sftflow', args.big)]:.2f}")
    ok = True
    for m in methods:
        growth = results[(m, args.big)]["peak_mb"] - results[(m, args.small)]["peak_mb"]
        flat = growth <= FLAT_MB
        ok &= flat or m == "plain"
        print(f"peak RSS growth {args.small:,} -> {args.big:,} lines, {m:16s}: {growth:+7.1f} MB "
              f"({'flat' if flat else 'NOT flat'}, limit {FLAT_MB:.0f} MB)")
    print(f"\ntotal wall time {time.perf_counter() - start:.0f}s (2 shared cores: timings are noisy)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
