"""rouge-score-rs must give bit-identical F-measures to rouge-score, or score_pair may not use it."""

from __future__ import annotations

import json
import re

import pytest

from sftflow.evaluation import rouge
from sftflow.data.samples import sample_paths
from sftflow.data.testset import read_test_csv

TRICKY = [
    ("", ""),
    ("", "something"),
    ("something", ""),
    ("   ", "\n\t"),
    ("!!! ??? ...", "..."),
    ("The cat sat on the mat.", "The cat sat on the mat."),
    ("The cats were running quickly", "the CAT runs quick"),  # stemming + case
    ("Pay $1,234.56 by 2024-03-01, 10% off!", "pay 1234 56 by 2024 03 01 10 off"),
    ("It's a dog's-life: well-known e-mail", "its a dogs life well known email"),
    ("Café naïve résumé — Zürich", "cafe naive resume zurich"),
    ("日本語のテキスト and English", "English 日本語"),
    ("emoji 🙂 test 👍🏽 ok", "emoji test ok 🙂"),
    ("a a a a b b", "a b a b a"),
    ("Line one.\nLine two.\n\nLine three.", "Line three. Line one."),
    ("x" * 500, "x" * 499),
    ("\u00a0non\u00a0breaking\u2009spaces", "non breaking spaces"),
    ("lone \ud800 surrogate", "lone surrogate"),
]


def _sample_pairs() -> list[tuple[str, str]]:
    """Reference/prediction pairs from the project's sample data: real summaries vs. articles,
    vs. lead sentences, vs. each other (long and short, high and low overlap)."""
    paths = sample_paths()
    test = read_test_csv(paths["test"])
    pairs: list[tuple[str, str]] = []
    for i, ex in enumerate(test):
        article = ex.input_text.split("\n\n", 1)[-1]
        lead = " ".join(re.split(r"(?<=[.!?])\s+", article)[:2])
        other = test[(i + 1) % len(test)].output_text
        pairs += [(ex.output_text, lead), (ex.output_text, other), (ex.output_text, article[:400])]
    for path in (paths["train"], paths["val"]):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                msgs = json.loads(line)["messages"]
                user = next(m["content"] for m in msgs if m["role"] == "user")
                model = next(m["content"] for m in msgs if m["role"] == "assistant")
                pairs.append((model, user.split("\n\n", 1)[-1][:300]))
    return pairs


def test_sample_data_gives_many_distinct_pairs():
    pairs = _sample_pairs()
    assert len(pairs) >= 500
    scores = {rouge.score_pair(r, p, impl="python")["rougeL"] for r, p in pairs[:200]}
    assert len(scores) > 50  # the comparison below is not between constant scores


def test_rust_scores_identical_to_reference_on_project_data():
    pairs = _sample_pairs() + TRICKY
    diffs = []
    for ref, pred in pairs:
        py = rouge.score_pair(ref, pred, impl="python")
        rs = rouge.score_pair(ref, pred, impl="rust")
        if py != rs:  # exact float equality, per metric
            diffs.append((ref[:60], pred[:60], py, rs))
    assert diffs == []


@pytest.mark.parametrize("ref,pred", TRICKY)
def test_tricky_strings_in_range_and_identical(ref, pred):
    py = rouge.score_pair(ref, pred, impl="python")
    rs = rouge.score_pair(ref, pred, impl="rust")
    assert set(py) == set(rouge.METRICS)
    assert py == rs
    assert all(0.0 <= v <= 1.0 for v in py.values())


def test_known_values():
    assert rouge.score_pair("The cat sat on the mat.", "The cat sat on the mat.") == {
        "rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    assert rouge.score_pair("a summary", "") == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    # stemming: "running"/"runs" -> "run"
    assert rouge.score_pair("dogs running", "dog runs")["rouge1"] == 1.0


def test_env_var_selects_implementation(monkeypatch):
    monkeypatch.delenv(rouge.IMPL_ENV, raising=False)
    assert rouge.implementation() == "rust"
    monkeypatch.setenv(rouge.IMPL_ENV, "python")
    assert rouge.implementation() == "python"
    assert rouge.score_pair("a b c", "a b")["rouge1"] == pytest.approx(0.8)
    monkeypatch.setenv(rouge.IMPL_ENV, "fortran")
    with pytest.raises(ValueError, match="SFTFLOW_ROUGE_IMPL"):
        rouge.implementation()
