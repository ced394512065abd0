"""`sftflow validate PATH...`: find every problem in any mix of data files, write nothing.

Chat files are converted example by example in memory and the converted examples go through
the same Gemini rules as a contents file, so the lint says what the tuning service would say
about the file `convert` would write (without its `limit`: the whole file is checked).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Literal

from sftflow.data.formats import convert_line, numbered_lines
from sftflow.data.reading import read_lines, shown, sniff_jsonl
from sftflow.data.rules import (
    Kind,
    Problem,
    line_too_long,
    parse_json_line,
    validate_contents_file,
    validate_records,
)
from sftflow.data.testset import validate_test_csv
from sftflow.errors import DataError
from sftflow.infra import storage

Format = Literal["chat", "contents", "testcsv"]
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")


def _first_record(f: IO[bytes]) -> tuple[int, bytes | None, int] | None:
    """(line, first non-blank line, size) — None as the line when it is over the length cap."""
    for n, (raw, size) in enumerate(read_lines(f), 1):
        if raw is None or raw.strip():
            return n, raw and raw.rstrip(b"\r\n"), size
    return None


def detect_format(path: str | os.PathLike) -> Format:
    """By extension, then by the first record: `messages` → chat, otherwise contents.

    A JSONL file without `messages` is judged as contents so its rules name the mistake
    (e.g. `contens`) instead of a vague "unknown format". A file that is not JSON Lines at
    all (a JSON array, pretty-printed JSON, UTF-16) raises DataError with one hint.
    """
    path = os.fspath(path)
    suffix = Path(path).suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "testcsv"
    with open(path, "rb") as f:
        whole = sniff_jsonl(f)
        if whole:
            raise DataError([Problem(path, *whole)])
        first = _first_record(f)
    if first is None:
        if suffix in JSON_SUFFIXES:
            return "contents"
        raise DataError([Problem(path, 0, "format", "empty file of unknown format")])
    n, raw, size = first
    if raw is None:
        if suffix in JSON_SUFFIXES:
            return "contents"  # its rules report the line
        raise DataError([line_too_long(path, n, size)])
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
        for n, raw, size in numbered_lines(f):
            if raw is None:
                yield n, [line_too_long(path, n, size)], size
                continue
            text, problems = convert_line(raw, path, n)
            if problems:
                yield n, problems, size
            elif text is not None:
                yield n, json.loads(text), len(text.encode("utf-8"))


def _check_file(path: str, kind: Kind | None = None) -> list[Problem]:
    if os.path.isdir(path):
        return [Problem(path, 0, "file", "is a directory; give the data files inside it")]
    if not os.path.exists(path):
        return [Problem(path, 0, "file", "no such file")]
    if not os.path.isfile(path):  # /dev/zero or a pipe would never end
        return [Problem(path, 0, "file", "not a regular file (a device or a pipe?)")]
    try:
        fmt = detect_format(path)
    except DataError as e:
        return e.problems
    if fmt == "testcsv":
        return validate_test_csv(path).problems
    if fmt == "contents":
        return validate_contents_file(path, kind or guess_kind(path)).problems
    return validate_records(path, kind or guess_kind(path), _chat_records(path)).problems


def _check_remote(uri: str, kind: Kind | None = None) -> list[Problem]:
    """A gs:// or https:// file, as `prepare` and `tune` read it: downloaded to a temporary file of the same name
    (its extension and name decide the format and the limits), checked, and the problems named by the URI."""
    with tempfile.TemporaryDirectory(prefix="sftflow-validate-") as tmp:
        local = os.path.join(tmp, storage.name_of(uri.split("?", 1)[0]) or "data")
        try:
            storage.download(uri, local)
        except Exception as e:  # noqa: BLE001 - one line naming the file, then the next file
            msg = (str(e).removeprefix(f"{uri}: ").strip().splitlines() or [type(e).__name__])[0]
            return [Problem(uri, 0, "file", f"cannot read: {msg}")]
        return [dataclasses.replace(p, path=uri) if p.path == local else p for p in _check_file(local, kind)]


def lint_path(path: str, kind: Kind | None = None) -> list[Problem]:
    """Every problem in one file (capped per file, see rules.MAX_STORED_PROBLEMS), gs:// and https:// URIs too;
    `kind` (train, val): whose limits apply, else guessed from the name.

    Never raises: a file that cannot be read, or one that trips a bug in a rule, is one
    problem naming the file, so the files after it are still checked.
    """
    try:
        if storage.is_gcs(path) or storage.is_http(path):
            return _check_remote(path, kind)
        return _check_file(path, kind)
    except OSError as e:
        return [Problem(path, 0, "file", f"cannot read: {e.strerror or type(e).__name__}")]
    except Exception as e:  # noqa: BLE001 - a bug must not hide the other files' problems
        return [Problem(path, 0, "file", f"the validator failed ({type(e).__name__}: {shown(str(e))}); "
                        "please report this with the file's first lines")]


def lint_paths(paths: list[str]) -> list[Problem]:
    """Problems of all files, in the order given; empty means every file is fine."""
    out: list[Problem] = []
    for p in paths:
        out.extend(lint_path(os.fspath(p)))
    return out
