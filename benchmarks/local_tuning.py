"""Local backend benchmark: one default tuning job, then ROUGE of LEAD-k, base (zero-shot),
tuned and the extractive oracle on the first test examples.

Data: the embedded samples (default), or with `--real` ACLSum — real ACL papers with
human-written summaries, MIT licence, shipped inside the `aclsum` wheel (the `bench` extra;
see benchmarks/aclsum_data.py). `--real --scale` trains on 500 real examples (both ACLSum
tasks over all 250 papers) to measure time and memory at that size; its papers overlap the
test set, so it reports no ROUGE.

Prints steps done vs planned, training and encoding time (wall and CPU), the runner's peak RSS,
the load average (the machine may be shared), generation latency, a ROUGE table, and
tuned − base with a paired bootstrap 95% CI. Exits 1 if the CI does not lie above 0
(ROUGE-L on the samples; all three ROUGE on the real set).

    python benchmarks/local_tuning.py [--samples 50] [--budget SECONDS] [--real [--scale]]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sftflow.backends.base import GenerationParams, TuningSpec
from sftflow.tuning.hyperparameters import Hyperparameters
from sftflow.backends.local import LocalTuner, jobs, make_local_generator
from sftflow.backends.local.text import requested_sentences, split_prompt, split_sentences
from sftflow.config import Settings
from sftflow.data.formats import convert_messages_file
from sftflow.data.samples import sample_paths
from sftflow.evaluation.rouge import METRICS, score_pair


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


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=None, help="test examples (default 50; 100 with --real)")
    ap.add_argument("--budget", type=float, default=None, help="training budget (default: Settings)")
    ap.add_argument("--real", action="store_true", help="ACLSum instead of the embedded samples")
    ap.add_argument("--scale", action="store_true", help="with --real: 500 training examples, time/memory only")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sftflow-bench-"))
    settings = Settings(local_root=tmp / ".sftflow")
    if args.real:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import aclsum_data

        src = {k: str(v) for k, v in aclsum_data.build(tmp / "data", scale=args.scale).items()}
    else:
        src = sample_paths()
    n_test = args.samples or (100 if args.real else 50)
    what = ("ACLSum" + (" (scale: 500 training examples)" if args.scale else "")) if args.real else "embedded samples"
    print(f"data: {what}; {load()}")
    train = to_contents(src["train"], tmp / "train.jsonl", settings)
    val = to_contents(src["val"], tmp / "val.jsonl", settings)
    spec = TuningSpec(base_model=settings.base_model, train_uri=train, val_uri=val,
                      hyperparameters=Hyperparameters.from_settings(settings),
                      display_name="bench", key="bench", seed=settings.seed,
                      budget_s=args.budget or settings.local_train_budget_s)
    tuner = LocalTuner(settings)
    t0 = time.monotonic()
    name = tuner.submit(spec)
    st = jobs.wait(tuner.root / name, timeout_s=1800, poll_s=0.5)
    wall = time.monotonic() - t0
    if st.state.value != "SUCCEEDED":
        print(f"tuning job {name} ended {st.state.value}: {st.error}", file=sys.stderr)
        return 1
    s = st.stats
    status = jobs.read_json(tuner.root / name / "status.json")
    print(f"tuning job {name}: {st.state.value} after {wall:.1f}s wall (submit → SUCCEEDED), "
          f"steps done {st.step} of {st.total_steps} planned, stop: {status.get('stop_reason')}, "
          f"best-by-validation step {status.get('best_step')}; {load()}")
    print(f"  training: {s['train_elapsed_s']:.1f}s, {s['examples_per_s']:.2f} examples/s over "
          f"{s['example_count']} examples ({s['sentence_count']} sentences); "
          f"encoding {s['encode_s']:.1f}s wall, {s.get('encode_cpu_s', '?')}s CPU for {s.get('encoded_sentences')} "
          f"distinct sentences (reused from cache: {s.get('encode_cached')}); runner CPU {s.get('cpu_s', '?')}s")
    print(f"  runner peak RSS: {s['peak_rss_mb'] / 1024:.2f} GiB; k = {s.get('k')}")
    if args.scale:
        return 0 if st.step >= st.total_steps and s["peak_rss_mb"] <= 2048 else 1

    rows = list(csv.DictReader(open(src["test"], encoding="utf-8")))[:n_test]
    params = GenerationParams(temperature=settings.temperature, max_output_tokens=settings.max_output_tokens)
    tuned_k = json.loads((Path(st.endpoint) / "config.json").read_text())["k"]

    def k_of(r) -> int:  # what the tuned model extracts: the prompt's count, else its k
        return requested_sentences(split_prompt(r["input_text"])[0]) or tuned_k

    lead = "LEAD-k"
    systems: dict[str, list[str]] = {
        lead: [" ".join(split_sentences(split_prompt(r["input_text"])[1])[:k_of(r)]) for r in rows],
        "oracle": [oracle(split_prompt(r["input_text"])[1], r["output_text"], max(3, tuned_k)) for r in rows],
    }
    for label, model in (("base", settings.base_model), ("tuned", st.endpoint)):
        gen = make_local_generator(settings, model)
        gen.generate(rows[0]["input_text"], params)  # load/warm-up outside the timing
        t = time.perf_counter()
        systems[label] = [gen.generate(r["input_text"], params).text for r in rows]
        print(f"  {label} generation: {(time.perf_counter() - t) / len(rows) * 1000:.0f} ms/article")
    scores = {k: [score_pair(r["output_text"], o) for r, o in zip(rows, outs)] for k, outs in systems.items()}

    print(f"\nROUGE F1 x100, mean over {len(rows)} test examples (LEAD-k, tuned: k = {tuned_k} unless the "
          f"prompt names a count; base: 2 unless it does)")
    print(f"{'system':<8}" + "".join(f"{m:>9}" for m in METRICS))
    for k in (lead, "base", "tuned", "oracle"):
        print(f"{k:<8}" + "".join(f"{100 * np.mean([x[m] for x in scores[k]]):9.1f}" for m in METRICS))
    ok = True
    for m in METRICS:
        diff = np.array([t[m] - b[m] for t, b in zip(scores["tuned"], scores["base"])])
        lo, hi = paired_bootstrap(diff)
        gap = np.mean([x[m] for x in scores["oracle"]]) - np.mean([x[m] for x in scores["base"]])
        print(f"tuned - base {m}: {100 * diff.mean():+.1f} points, paired bootstrap 95% CI "
              f"[{100 * lo:+.1f}, {100 * hi:+.1f}]; closes {100 * diff.mean() / gap:.0f}% of the base→oracle gap")
        if m == "rougeL" or args.real:
            ok = ok and lo > 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
