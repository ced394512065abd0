"""Each Gemini tuning rule on a small bad file: the problem names file, line and field."""

from __future__ import annotations

import json

import pytest

from sftflow.data import rules
from sftflow.data.rules import Problem, estimate_tokens, validate_contents_file
from sftflow.errors import DataError


def turn(role, text="t"):
    return {"role": role, "parts": [{"text": text}]}


GOOD = {"contents": [turn("user", "q"), turn("model", "a")]}


def write(tmp_path, second, name="train.jsonl") -> str:
    """A file whose line 2 is `second` (an object or a raw string) between good lines."""
    p = tmp_path / name
    mid = second if isinstance(second, str) else json.dumps(second)
    p.write_text(f"{json.dumps(GOOD)}\n{mid}\n{json.dumps(GOOD)}\n", encoding="utf-8")
    return str(p)


def test_problem_str_and_data_error():
    p = Problem("a.jsonl", 3, "contents[0].role", "bad")
    assert str(p) == "a.jsonl:3: contents[0].role: bad"
    err = DataError([p], count=3)
    assert isinstance(err, ValueError) and err.problems == [p]
    assert str(err) == "a.jsonl:3: contents[0].role: bad\n... and 2 more problems"


def test_good_file_reports_counts_and_tokens(tmp_path):
    path = write(tmp_path, {"systemInstruction": {"role": "system", "parts": [{"text": "12345"}]}, **GOOD})
    r = validate_contents_file(path, "train")
    assert r.ok, r.problems
    assert (r.examples, r.estimated_tokens, r.max_example_tokens) == (3, 2 + 2 + 4, 4)


@pytest.mark.parametrize(
    ("example", "field", "message"),
    [
        ("{oops", "json", "invalid JSON"),
        ("[1, 2]", "example", "must be a JSON object, got array"),
        ({"contens": GOOD["contents"]}, "contens", "unknown field (allowed: contents, systemInstruction); did you mean 'contents'?"),
        ({"contens": GOOD["contents"]}, "contents", "required field missing"),
        ({"contents": "hi"}, "contents", "must be a list"),
        ({"contents": []}, "contents", "must contain at least one turn"),
        ({"contents": ["hi", turn("model")]}, "contents[0]", "must be an object"),
        ({"contents": [{"role": "user", "parts": [{"text": "q"}], "x": 1}, turn("model")]}, "contents[0].x", "unknown field"),
        ({"contents": [{"role": "user", "parts": [{"txt": "q"}]}, turn("model")]}, "contents[0].parts[0].txt", "unknown field"),
        ({"contents": [{"role": "user", "parts": [{"txt": "q"}]}, turn("model")]}, "contents[0].parts[0].text", "required field missing"),
        ({"contents": [turn("user"), {"role": "model", "parts": []}]}, "contents[1].parts", "must contain at least one part"),
        ({"contents": [turn("user"), {"role": "model"}]}, "contents[1].parts", "required field missing"),
        ({"contents": [turn("user"), {"role": "model", "parts": [{"text": 3}]}]}, "contents[1].parts[0].text", "must be a string"),
        ({"contents": [turn("user"), turn("assistant")]}, "contents[1].role", "role 'assistant' not allowed (user, model); use 'model'"),
        ({"contents": [{"parts": [{"text": "q"}]}, turn("model")]}, "contents[0].role", "required field missing"),
        ({"contents": [turn("model"), turn("user"), turn("model")]}, "contents[0].role", "the first turn must be 'user'"),
        ({"contents": [turn("user"), turn("user"), turn("model")]}, "contents[1].role", "two 'user' turns in a row"),
        ({"contents": [turn("user"), turn("model"), turn("user")]}, "contents[2].role", "the last turn must be 'model'"),
        ({"contents": [turn("user", "  \n"), turn("model")]}, "contents[0].parts[0].text", "empty or whitespace-only text"),
        ({"systemInstruction": {"parts": [{"text": ""}]}, **GOOD}, "systemInstruction.parts[0].text", "empty or whitespace-only"),
        ({"systemInstruction": "be brief", **GOOD}, "systemInstruction", "must be an object"),
        ({"contents": [turn("user", "x" * (4 * 131_072 + 1)), turn("model")]}, "contents", "over the 131072 limit"),
        ("", "line", "blank line"),
    ],
)
def test_each_rule_names_file_line_and_field(tmp_path, example, field, message):
    path = write(tmp_path, example)
    r = validate_contents_file(path, "train")
    assert not r.ok
    lines = [str(p) for p in r.problems]
    prefix = f"{path}:2: {field}: "
    assert any(s.startswith(prefix) and message in s for s in lines), lines
    assert all(p.line == 2 for p in r.problems), lines  # the good lines around it are clean


def test_one_mistake_one_problem(tmp_path):
    """A wrong role is not also reported as bad turn order."""
    r = validate_contents_file(write(tmp_path, {"contents": [turn("user"), turn("bot")]}), "train")
    assert [p.field for p in r.problems] == ["contents[1].role"]


def test_empty_file(tmp_path):
    (tmp_path / "train.jsonl").write_text("")
    r = validate_contents_file(tmp_path / "train.jsonl", "train")
    assert [str(p) for p in r.problems] == [f"{tmp_path / 'train.jsonl'}:0: examples: no examples: the file is empty"]


def test_validation_example_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(rules, "MAX_VAL_EXAMPLES", 2)
    path = write(tmp_path, GOOD, "val.jsonl")
    assert validate_contents_file(path, "train").ok
    r = validate_contents_file(path, "val")
    assert [str(p) for p in r.problems] == [f"{path}:0: examples: 3 examples; a val dataset allows at most 2"]


def test_training_file_size_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(rules, "MAX_TRAIN_FILE_BYTES", 100)
    path = write(tmp_path, GOOD)
    r = validate_contents_file(path, "train")
    assert [p.field for p in r.problems] == ["file"] and r.problems[0].line == 0
    assert validate_contents_file(path, "val").ok


def test_problems_are_capped_but_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(rules, "MAX_STORED_PROBLEMS", 5)
    p = tmp_path / "train.jsonl"
    p.write_text("{bad\n" * 12)
    r = validate_contents_file(p, "train")
    assert (len(r.problems), r.problem_count, r.examples) == (5, 12, 12)
    with pytest.raises(DataError, match="and 7 more problems"):
        r.raise_if_problems()


def test_limits_match_the_documented_values():
    assert (rules.MAX_EXAMPLE_TOKENS, rules.MAX_TRAIN_EXAMPLES, rules.MAX_VAL_EXAMPLES) == (131_072, 1_000_000, 5_000)


def test_token_estimate():
    assert [estimate_tokens(s) for s in ("", "a", "abcd", "abcde")] == [0, 1, 1, 2]


def test_progress(tmp_path):
    path = write(tmp_path, GOOD)
    seen = []
    validate_contents_file(path, "train", on_progress=lambda d, t, i: seen.append((d, t, i["problems"])))
    assert seen[-1] == (3, 3, 0)
