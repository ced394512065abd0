"""Format detection and linting a mix of files without writing anything."""

from __future__ import annotations

import json

import pytest

from sftflow.data.lint import detect_format, lint_paths
from sftflow.errors import DataError

CHAT = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
CONTENTS = {"contents": [{"role": "user", "parts": [{"text": "q"}]}, {"role": "model", "parts": [{"text": "a"}]}]}


def write(tmp_path, name, text) -> str:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def test_detect_format(tmp_path):
    assert detect_format(write(tmp_path, "a.jsonl", json.dumps(CHAT) + "\n")) == "chat"
    assert detect_format(write(tmp_path, "b.jsonl", "\n" + json.dumps(CONTENTS) + "\n")) == "contents"
    assert detect_format(write(tmp_path, "c.csv", "input_text,output_text\n")) == "testcsv"
    assert detect_format(write(tmp_path, "d.txt", "input_text,output_text\na,b\n")) == "testcsv"
    assert detect_format(write(tmp_path, "e", json.dumps(CHAT) + "\n")) == "chat"
    assert detect_format(write(tmp_path, "f.jsonl", '{"contens": []}\n')) == "contents"
    with pytest.raises(DataError, match="format"):
        detect_format(write(tmp_path, "g.txt", "hello\n"))


def test_clean_files_give_no_problems_and_nothing_is_written(tmp_path):
    paths = [
        write(tmp_path, "sft_train_samples.jsonl", (json.dumps(CHAT) + "\n") * 3),
        write(tmp_path, "tuned.jsonl", json.dumps(CONTENTS) + "\n"),
        write(tmp_path, "test.csv", "input_text,output_text\na,b\n"),
    ]
    before = sorted(tmp_path.iterdir())
    assert lint_paths(paths) == []
    assert sorted(tmp_path.iterdir()) == before


def test_problems_from_every_kind_of_file(tmp_path):
    chat = write(tmp_path, "chat.jsonl", json.dumps(CHAT) + "\n" + json.dumps({"messages": [{"role": "user", "content": "only"}]}) + "\n")
    bad_role = write(tmp_path, "roles.jsonl", json.dumps({"messages": [{"role": "bot", "content": "x"}]}) + "\n")
    typo = write(tmp_path, "typo.jsonl", json.dumps({"contens": CONTENTS["contents"]}) + "\n")
    csv = write(tmp_path, "test.csv", "input_text,output_text\na,\n")
    missing = str(tmp_path / "nope.jsonl")
    got = [str(p) for p in lint_paths([chat, bad_role, typo, csv, missing])]
    assert got == [
        f"{chat}:2: contents[0].role: the last turn must be 'model' (the target output)",
        f"{bad_role}:1: messages[0].role: unknown role 'bot' (allowed: system, user, assistant, model)",
        f"{typo}:1: contens: unknown field (allowed: contents, systemInstruction); did you mean 'contents'?",
        f"{typo}:1: contents: required field missing",
        f"{csv}:2: output_text: empty cell",
        f"{missing}:0: file: no such file",
    ]


def test_validation_limits_apply_to_val_files(tmp_path, monkeypatch):
    from sftflow.data import rules

    monkeypatch.setattr(rules, "MAX_VAL_EXAMPLES", 1)
    train = write(tmp_path, "sft_train_samples.jsonl", (json.dumps(CHAT) + "\n") * 2)
    val = write(tmp_path, "sft_val_samples.jsonl", (json.dumps(CHAT) + "\n") * 2)
    assert [str(p) for p in lint_paths([train, val])] == [f"{val}:0: examples: 2 examples; a val dataset allows at most 1"]
