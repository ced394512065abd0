"""`sftflow validate PATH...`: find every problem in any mix of data files, write nothing.

Chat files are converted example by example in memory and the converted examples go through
the same Gemini rules as a contents file, so the lint says what the tuning service would say
about the file `convert` would write (without its `limit`: the whole file is checked).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from sftflow.data.formats import convert_line
from sftflow.data.rules import (
    DataError,
    Kind,
    Problem,
    parse_json_line,
    validate_contents_file,
    validate_records,
)
from sftflow.data.testset import validate_test_csv

Format = Literal["chat", "contents", "testcsv"]
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")


def _first_record(path: str) -> tuple[int, bytes] | None:
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if raw.strip():
                return n, raw.rstrip(b"\r\n")
    return None


def detect_format(path: str | os.PathLike) -> Format:
    """By extension, then by the first record: `messages` → chat, otherwise contents.

    A JSONL file without `messages` is judged as contents so its rules name the mistake
    (e.g. `contens`) instead of a vague "unknown format".
    """
    path = os.fspath(path)
    suffix = Path(path).suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "testcsv"
    first = _first_record(path)
    if first is None:
        if suffix in JSON_SUFFIXES:
            return "contents"
        raise DataError([Problem(path, 0, "format", "empty file of unknown format")])
    n, raw = first
    obj, problem = parse_json_line(raw, path, n)
    if obj is not None:
        return "chat" if "messages" in obj else "contents"
    if suffix in JSON_SUFFIXES:
        return "contents"  # its rules report the bad line
    if b"input_text" in raw or b"output_text" in raw:
        return "testcsv"
    raise DataError([Problem(path, n, "format", "not JSONL (chat or contents) nor a test CSV")])


def guess_kind(path: str) -> Kind:
    """Validation limits apply to files whose name says so (`sft_val_samples.jsonl`)."""
    return "val" if "val" in Path(path).name.lower() else "train"


def _chat_records(path: str) -> Iterator[tuple[int, dict | list[Problem], int]]:
    """A chat file's lines as converted examples (or conversion problems), one at a time.

    Blank lines are skipped, as convert skips them; sizes are those of the converted lines.
    """
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            text, problems = convert_line(raw, path, n)
            if problems:
                yield n, problems, len(raw)
            elif text is not None:
                yield n, json.loads(text), len(text.encode("utf-8"))


def lint_path(path: str) -> list[Problem]:
    """Every problem in one file (capped per file, see rules.MAX_STORED_PROBLEMS)."""
    if not os.path.isfile(path):
        return [Problem(path, 0, "file", "no such file")]
    try:
        fmt = detect_format(path)
    except DataError as e:
        return e.problems
    if fmt == "testcsv":
        return validate_test_csv(path).problems
    if fmt == "contents":
        return validate_contents_file(path, guess_kind(path)).problems
    return validate_records(path, guess_kind(path), _chat_records(path)).problems


def lint_paths(paths: list[str]) -> list[Problem]:
    """Problems of all files, in the order given; empty means every file is fine."""
    out: list[Problem] = []
    for p in paths:
        out.extend(lint_path(os.fspath(p)))
    return out
