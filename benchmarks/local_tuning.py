"""Local backend benchmark: one default tuning job on the embedded samples, then ROUGE of
LEAD-3, base (zero-shot), tuned and the extractive oracle on the first 50 test examples.

Prints training speed (examples/s, sentences/s), the runner's peak RSS, tuning wall time,
generation latency, a ROUGE table, and tuned − base ROUGE-L with a paired bootstrap 95% CI.
Exits 1 if the CI does not lie above 0. Timings on a shared 2-core machine are noisy.

    python benchmarks/local_tuning.py [--samples 50] [--budget SECONDS]
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sftflow.backends.base import GenerationParams, TuningSpec
from sftflow.backends.local import LocalTuner, jobs, make_local_generator
from sftflow.backends.local.text import split_prompt, split_sentences
from sftflow.config import Settings
from sftflow.data.formats import convert_messages_file
from sftflow.data.samples import sample_paths
from sftflow.rouge import METRICS, score_pair


def to_contents(src: str, dest: Path, settings: Settings) -> str:
    """Chat JSONL → Gemini `contents` JSONL with the product's own converter, as the prepare step
    writes it: system messages become `systemInstruction`, which the local tuner reads."""
    convert_messages_file(src, dest, limit=settings.limit, shuffle_seed=settings.shuffle_seed, source_name=src)
    return str(dest)


def oracle(article: str, reference: str, k_max: int = 3) -> str:
    """Greedy extractive oracle: add the sentence that most raises ROUGE-L F vs the reference."""
    sents, chosen, best = split_sentences(article), [], 0.0
    while len(chosen) < k_max:
        cands = [(score_pair(reference, " ".join(sents[j] for j in sorted(chosen + [i])))["rougeL"], i)
                 for i in range(len(sents)) if i not in chosen]
        if not cands or max(cands)[0] <= best:
            break
        best, i = max(cands)
        chosen.append(i)
    return " ".join(sents[j] for j in sorted(chosen))


def paired_bootstrap(diff: np.ndarray, n: int = 10_000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n, len(diff)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--budget", type=float, default=None, help="training budget (default: Settings)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sftflow-bench-"))
    settings = Settings(local_root=tmp / ".sftflow")
    src = sample_paths()
    train = to_contents(src["train"], tmp / "train.jsonl", settings)
    val = to_contents(src["val"], tmp / "val.jsonl", settings)
    spec = TuningSpec(base_model=settings.base_model, train_uri=train, val_uri=val, epochs=settings.epochs,
                      adapter_size=settings.adapter_size, learning_rate_multiplier=settings.learning_rate_multiplier,
                      display_name="bench", key="bench", seed=settings.seed,
                      budget_s=args.budget or settings.local_train_budget_s)
    tuner = LocalTuner(settings)
    t0 = time.monotonic()
    name = tuner.submit(spec)
    st = jobs.wait(tuner.root / name, timeout_s=900, poll_s=0.5)
    wall = time.monotonic() - t0
    if st.state.value != "SUCCEEDED":
        print(f"tuning job {name} ended {st.state.value}: {st.error}", file=sys.stderr)
        return 1
    s = st.stats
    print(f"tuning job {name}: {st.state.value} after {wall:.1f}s wall (submit → SUCCEEDED), "
          f"{st.step}/{st.total_steps} steps, stop: {jobs.read_json(tuner.root / name / 'status.json').get('stop_reason')}")
    print(f"  training: {s['train_elapsed_s']:.1f}s, {s['examples_per_s']:.2f} examples/s, "
          f"{s['examples_per_s'] * s['sentence_count'] / s['example_count']:.1f} sentences/s; "
          f"lower-layer encoding {s['encode_s']:.1f}s for {s['sentence_count']} sentences")
    print(f"  runner peak RSS: {s['peak_rss_mb'] / 1024:.2f} GiB")

    rows = list(csv.DictReader(open(src["test"], encoding="utf-8")))[: args.samples]
    params = GenerationParams(temperature=settings.temperature, max_output_tokens=settings.max_output_tokens)
    systems: dict[str, list[str]] = {
        "LEAD-3": [" ".join(split_sentences(split_prompt(r["input_text"])[1])[:3]) for r in rows],
        "oracle": [oracle(split_prompt(r["input_text"])[1], r["output_text"]) for r in rows],
    }
    for label, model in (("base", settings.base_model), ("tuned", st.endpoint)):
        gen = make_local_generator(settings, model)
        gen.generate(rows[0]["input_text"], params)  # load/warm-up outside the timing
        t = time.perf_counter()
        systems[label] = [gen.generate(r["input_text"], params).text for r in rows]
        print(f"  {label} generation: {(time.perf_counter() - t) / len(rows) * 1000:.0f} ms/article")
    scores = {k: [score_pair(r["output_text"], o) for r, o in zip(rows, outs)] for k, outs in systems.items()}

    print(f"\nROUGE F1 x100, mean over {len(rows)} test examples")
    print(f"{'system':<8}" + "".join(f"{m:>9}" for m in METRICS))
    for k in ("LEAD-3", "base", "tuned", "oracle"):
        print(f"{k:<8}" + "".join(f"{100 * np.mean([x[m] for x in scores[k]]):9.1f}" for m in METRICS))
    diff = np.array([t["rougeL"] - b["rougeL"] for t, b in zip(scores["tuned"], scores["base"])])
    lo, hi = paired_bootstrap(diff)
    print(f"\ntuned - base ROUGE-L: {100 * diff.mean():+.1f} points, paired bootstrap 95% CI "
          f"[{100 * lo:+.1f}, {100 * hi:+.1f}]")
    return 0 if lo > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
