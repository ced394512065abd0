"""summarize / compare: pairing, exclusions, bootstrap CI, Wilcoxon, verdicts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import wilcoxon

from sftflow.evaluation.compare_report import verdict_lines
from sftflow.evaluation.results import ExampleResult
from sftflow.evaluation.rouge import METRICS
from sftflow.evaluation.stats import (
    Comparison,
    bootstrap_means,
    compare,
    counts,
    percentile_ci,
    summarize,
    wilcoxon_p,
)


def res(i, score, model="m", error=None, blocked=False, output="x"):
    scores = None if error else {m: float(score) for m in METRICS}
    return ExampleResult(id=f"e{i}", model=model, prompt_chars=10, reference="ref", output=output,
                         finish_reason="STOP", blocked=blocked, error=error, scores=scores, attempts=1)


def synthetic(n, effect, seed, noise=0.1):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.1, 0.5, n)
    tuned = np.clip(base + effect + rng.normal(0, noise, n), 0, 1)
    return ([res(i, s, "base") for i, s in enumerate(base)],
            [res(i, s, "tuned") for i, s in enumerate(tuned)], tuned - base)


def test_summarize_excludes_errors_keeps_blocked():
    results = [res(0, 0.5), res(1, 0.3), res(2, 0.0, blocked=True, output=""), res(3, 0, error="boom")]
    s = summarize(results)
    assert s["rougeL"]["n"] == 3
    assert s["rougeL"]["mean"] == pytest.approx(0.8 / 3)
    assert s["rouge1"]["median"] == pytest.approx(0.3)
    assert s["rouge2"]["std"] == pytest.approx(np.std([0.5, 0.3, 0.0], ddof=1))
    assert counts(results) == {"total": 4, "scored": 3, "errors": 1, "blocked": 1, "empty": 0}
    assert math.isnan(summarize([])["rouge1"]["mean"])


def test_ci_contains_true_difference_and_is_reproducible():
    base, tuned, _ = synthetic(300, 0.04, seed=1)
    c = compare(base, tuned, n_boot=4000, seed=0)
    mc = c.metrics["rougeL"]
    assert mc.ci_low < 0.04 < mc.ci_high
    assert mc.ci_low > 0  # the effect is detectable at this n
    assert mc.p_value < 0.001
    assert compare(base, tuned, n_boot=4000, seed=0).to_json() == c.to_json()
    assert compare(base, tuned, n_boot=4000, seed=1).metrics["rougeL"].ci_low != mc.ci_low


def test_bootstrap_coverage_close_to_95_percent():
    """Over many synthetic data sets the 95% CI covers the true mean about 95% of the time."""
    rng = np.random.default_rng(7)
    hits, trials = 0, 200
    for t in range(trials):
        d = rng.normal(0.03, 0.1, 60)
        lo, hi = percentile_ci(bootstrap_means({"d": d}, n_boot=1000, seed=t)["d"])
        hits += lo <= 0.03 <= hi
    assert 0.88 <= hits / trials <= 0.99


def test_bootstrap_keeps_pairs_and_chunks_match():
    x = np.arange(50, dtype=float)
    boot = bootstrap_means({"a": x, "b": 2 * x}, n_boot=500, seed=3)
    np.testing.assert_allclose(boot["b"], 2 * boot["a"])  # same indices for both arrays
    import sftflow.evaluation.stats as st

    old = st._BOOT_CELLS
    st._BOOT_CELLS = 120  # force several chunks: the same stream of resamples
    try:
        chunked = bootstrap_means({"a": x}, n_boot=500, seed=3)["a"]
    finally:
        st._BOOT_CELLS = old
    np.testing.assert_array_equal(chunked, boot["a"])  # exactly the same resamples, hence the same means


def test_exclusions_counted_with_reasons():
    base = [res(i, 0.3, "base") for i in range(10)]
    tuned = [res(i, 0.4, "tuned") for i in range(10)]
    base[0] = res(0, 0, "base", error="429")
    tuned[1] = res(1, 0, "tuned", error="503")
    tuned[2] = res(2, 0, "tuned", error="x")
    base[3] = res(3, 0, "base", error="x")
    tuned[3] = res(3, 0, "tuned", error="y")
    del tuned[9]  # missing in tuned
    tuned.append(res(42, 0.1, "tuned"))  # missing in baseline
    c = compare(base, tuned, n_boot=200)
    assert c.excluded == {"error in baseline": 1, "error in tuned": 2, "error in both": 1,
                          "missing in baseline": 1, "missing in tuned": 1}
    assert c.n_paired == 5 and c.n_excluded == 6
    mc = c.metrics["rouge1"]
    assert (mc.wins, mc.ties, mc.losses) == (5, 0, 0)
    assert mc.difference == pytest.approx(0.1)
    assert c.baseline_model == "base" and c.tuned_model == "tuned"
    j = c.to_json()
    assert j["excluded"] == c.excluded and j["n_paired"] == 5
    assert set(j["metrics"]["rougeL"]) >= {"baseline_mean", "tuned_mean", "difference", "ci_low", "ci_high",
                                          "n_paired", "n_excluded", "wins", "ties", "losses", "p_value"}


def test_wilcoxon_matches_scipy_and_edge_cases():
    base, tuned, d = synthetic(40, 0.01, seed=5)
    c = compare(base, tuned, n_boot=100)
    d_rl = np.array([t.scores["rougeL"] - b.scores["rougeL"] for b, t in zip(base, tuned)])
    assert c.metrics["rougeL"].p_value == pytest.approx(wilcoxon(d_rl).pvalue, rel=1e-12)
    # all differences zero: scipy refuses, we say p = 1
    same = compare(base, base, n_boot=100).metrics["rouge1"]
    assert same.p_value == 1.0 and same.ties == 40 and same.difference == 0.0
    assert same.ci_low == same.ci_high == 0.0
    assert wilcoxon_p(np.array([0.2])) is None
    assert wilcoxon_p(np.array([])) is None
    # nothing paired at all: no crash, NaN → null in JSON
    empty = compare([res(0, 0, error="x")], [res(0, 0.3)], n_boot=50)
    assert empty.n_paired == 0
    text = json.dumps(empty.to_json(), allow_nan=False)
    assert json.loads(text)["metrics"]["rougeL"]["difference"] is None
    assert "too few paired examples" in verdict_lines(empty)[0]


def test_verdict_lines_and_json_roundtrip():
    base, tuned, _ = synthetic(120, 0.05, seed=2)
    c = compare(base, tuned, n_boot=2000)
    lines = verdict_lines(c)
    assert lines[2].startswith("tuned beats base on ROUGE-L by +")
    assert "[CI +" in lines[2] and "p<0.001" in lines[2] and "n=120" in lines[2]
    worse = verdict_lines(compare(tuned, base, n_boot=2000))
    assert worse[0].startswith("tuned is worse than base on ROUGE-1 by -")
    base2, tuned2, _ = synthetic(30, 0.0, seed=4, noise=0.05)
    flat = verdict_lines(compare(base2, tuned2, n_boot=2000))
    assert all(line.startswith("no significant difference") for line in flat)
    back = Comparison.from_json(json.loads(json.dumps(c.to_json())))
    assert back.to_json() == c.to_json()
