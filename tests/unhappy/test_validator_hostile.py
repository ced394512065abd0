"""Hostile inputs for the validator: each becomes `path:line: field: problem`, never a crash.

Every case is checked three ways — `sftflow validate` (lint), prepare's convert+validate path,
and (CSV) the evaluation's test-set reader — and each time the file after it is still checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from sftflow.data.formats import convert_messages_file
from sftflow.data.lint import lint_paths
from sftflow.data.reading import MAX_LINE_BYTES, SHOWN_CHARS, read_lines
from sftflow.data.rules import validate_contents_file
from sftflow.data.testset import read_test_csv, validate_test_csv
from sftflow.errors import DataError

CHAT = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
CONTENTS = {"contents": [{"role": "user", "parts": [{"text": "q"}]}, {"role": "model", "parts": [{"text": "a"}]}]}
GOOD_CHAT = (json.dumps(CHAT) + "\n").encode()
GOOD_CSV = b"input_text,output_text\nan article,a summary\n"


def chat(content: str) -> bytes:
    """A chat line whose first message's content is `content`, raw JSON text (escapes kept)."""
    return b'{"messages": [{"role": "user", "content": "' + content.encode() + b'"}, ' \
           b'{"role": "assistant", "content": "a"}]}\n'


def nested(depth: int) -> bytes:
    return b'{"messages": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}\n"


@dataclass(frozen=True)
class Hostile:
    id: str
    name: str  # file name (its suffix picks the format)
    content: bytes | Callable[[], bytes] | None  # None: a directory
    where: str  # expected "line: field:" of the first problem; "" when the file is fine
    says: str = ""  # a fragment the first problem's message contains
    only: bool = False  # the file yields exactly one problem
    then: str = ""  # expected "line: field:" of the second problem (the lines after are still read)
    prepare_where: str = ""  # when prepare (which skips blank chat lines) reports otherwise


HOSTILE = [
    # --- encoding: lone surrogates (valid JSON text, not Unicode), bad bytes, NUL, BOMs
    Hostile("chat-lone-high-surrogate", "chat.jsonl", chat("\\ud800"), "1: messages[0].content:", "lone surrogate"),
    Hostile("chat-lone-low-surrogate", "chat.jsonl", GOOD_CHAT + chat("ok \\udfff"), "2: messages[0].content:",
            "lone surrogate \\udfff at character 4"),
    Hostile("chat-reversed-pair", "chat.jsonl", chat("\\ude00\\ud83d"), "1: messages[0].content:", "lone surrogate"),
    Hostile("chat-surrogate-in-key", "chat.jsonl",
            b'{"messages": [{"role": "user", "content": "q", "\\ud800": 1}]}\n', "1: messages[0].'\\ud800':",
            "key: lone surrogate"),
    Hostile("gemini-lone-surrogate", "tuned.jsonl",
            json.dumps({"contents": [{"role": "user", "parts": [{"text": "\ud800"}]},
                                     {"role": "model", "parts": [{"text": "a"}]}]}).encode() + b"\n",
            "1: contents[0].parts[0].text:", "lone surrogate"),
    Hostile("gemini-surrogate-in-system", "tuned.jsonl",
            json.dumps({"systemInstruction": {"parts": [{"text": "x\udc00"}]}, **CONTENTS}).encode() + b"\n",
            "1: systemInstruction.parts[0].text:", "lone surrogate"),
    Hostile("chat-invalid-utf8", "chat.jsonl", b'{"messages": "caf\xe9"}\n', "1: encoding:", "not UTF-8 (byte 0xe9"),
    Hostile("chat-utf8-encoded-surrogate", "chat.jsonl", b'{"messages": "\xed\xa0\x80"}\n', "1: encoding:", "not UTF-8"),
    Hostile("chat-nul-bytes", "chat.jsonl", GOOD_CHAT + b'{"messages": []}\x00\x00\n', "2: encoding:", "NUL byte"),
    Hostile("binary-garbage", "chat.jsonl", bytes(range(256)) * 4, "1: encoding:", "NUL byte at column 1"),
    Hostile("chat-utf16-bom", "chat.jsonl", "\ufeff".encode("utf-16-le") + GOOD_CHAT.decode().encode("utf-16-le"),
            "1: encoding:", "UTF-16", only=True),
    Hostile("chat-utf8-bom", "chat.jsonl", b"\xef\xbb\xbf" + GOOD_CHAT * 2, ""),
    Hostile("chat-bom-mid-file", "chat.jsonl", GOOD_CHAT + b"\xef\xbb\xbf" + GOOD_CHAT, "2: json:", "invalid JSON"),
    Hostile("csv-lone-surrogate", "test.csv", b"input_text,output_text\nan \xed\xa0\x80 article,a summary\n",
            "2: encoding:", "not UTF-8 (byte 0xed at column 4)"),
    Hostile("csv-invalid-utf8", "test.csv", b"input_text,output_text\ncaf\xe9,a summary\n", "2: encoding:", "not UTF-8"),
    Hostile("csv-nul-bytes", "test.csv", b"input_text,output_text\nan\x00article,a summary\n", "2: encoding:", "NUL"),
    Hostile("csv-utf16", "test.csv", "\ufeffinput_text,output_text\na,b\n".encode("utf-16-le"), "1: encoding:",
            "UTF-16", only=True),
    Hostile("csv-utf8-bom", "test.csv", b"\xef\xbb\xbf" + GOOD_CSV, ""),
    # --- too deep, too long, too big
    Hostile("nested-100k-objects", "chat.jsonl", nested(100_000), "1: json:", "nested too deeply"),
    Hostile("nested-100k-arrays-in-object", "chat.jsonl", b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
            "1: json:", "nested too deeply"),
    Hostile("integer-5000-digits", "chat.jsonl", b'{"messages": ' + b"9" * 5000 + b"}\n", "1: json:", "invalid JSON"),
    Hostile("line-over-cap", "chat.jsonl", lambda: GOOD_CHAT + b'{"messages": "' + b"x" * MAX_LINE_BYTES + b'"}\n'
            + GOOD_CHAT + chat("\\ud800"), "2: size:", "over the 16,777,216-byte limit", then="4: messages[0].content:"),
    Hostile("last-line-over-cap-no-newline", "chat.jsonl", lambda: GOOD_CHAT + b"x" * (MAX_LINE_BYTES + 1), "2: size:",
            "over the", only=True),
    Hostile("only-line-over-cap", "tuned.jsonl", lambda: b"{" + b" " * MAX_LINE_BYTES + b"}", "1: size:", "over the",
            only=True),
    # --- not JSON Lines at all
    Hostile("json-array-pretty", "chat.jsonl", json.dumps([CHAT] * 12, indent=2).encode(), "1: file:",
            "this is a JSON array; JSON Lines expected (one object per line)", only=True),
    Hostile("json-array-one-line", "chat.jsonl", json.dumps([CHAT, CHAT]).encode() + b"\n", "1: file:",
            "this is a JSON array", only=True),
    Hostile("json-array-after-bom-and-blanks", "chat.jsonl", b"\xef\xbb\xbf\n  \n [\n" + GOOD_CHAT + b"]\n", "3: file:",
            "this is a JSON array", only=True),
    Hostile("deep-array-file", "chat.jsonl", b"[" * 100_000 + b"]" * 100_000 + b"\n", "1: file:", "JSON array",
            only=True),
    Hostile("json-pretty-object", "chat.jsonl", json.dumps(CHAT, indent=2).encode() + b"\n", "1: file:",
            "pretty-printed JSON", only=True),
    Hostile("top-level-string", "chat.jsonl", b'"just text"\n', "1: example:", "must be a JSON object"),
    Hostile("truncated-last-line", "chat.jsonl", GOOD_CHAT + GOOD_CHAT[:30], "2: json:", "invalid JSON"),
    Hostile("cr-only-line-endings", "chat.jsonl", GOOD_CHAT.replace(b"\n", b"\r") * 3, "1: json:", "Extra data"),
    Hostile("crlf-line-endings", "chat.jsonl", GOOD_CHAT.replace(b"\n", b"\r\n") * 3, ""),
    Hostile("csv-crlf-line-endings", "test.csv", GOOD_CSV.replace(b"\n", b"\r\n"), ""),
    # --- CSV quoting (strict)
    Hostile("csv-unterminated-quote", "test.csv", b'input_text,output_text\n"an article,a summary\nmore,text\n',
            "2: csv:", "unterminated quote", only=True),
    Hostile("csv-unterminated-quote-later", "test.csv", GOOD_CSV + b'x,y\n"z,w\n', "4: csv:", "unterminated quote"),
    Hostile("csv-stray-quote", "test.csv", b'input_text,output_text\n"an" article,a summary\n', "2: csv:",
            "malformed CSV record"),
    Hostile("csv-line-over-cap", "test.csv", lambda: GOOD_CSV + b"x" * (MAX_LINE_BYTES + 10) + b",y\nc,\n", "3: size:",
            "over the", then="4: output_text:"),
    # --- empty, blank, not a file
    Hostile("empty-jsonl", "chat.jsonl", b"", "0: examples:", "no examples"),
    Hostile("blank-lines-only-jsonl", "chat.jsonl", b"\n \n\t\n", "1: line:", "blank line",
            prepare_where="0: examples:"),
    Hostile("empty-csv", "test.csv", b"", "0: file:", "empty file"),
    Hostile("directory", "data.jsonl", None, "0: file:", "is a directory", only=True),
]
IDS = [h.id for h in HOSTILE]

NEXT = b'{"messages": [{"role": "user", "content": "only a question"}]}\n'  # its known problem:
NEXT_PROBLEM = "1: contents[0].role: the last turn must be 'model' (the target output)"


def place(tmp_path: Path, h: Hostile) -> str:
    path = tmp_path / h.name
    if h.content is None:
        path.mkdir()
    else:
        path.write_bytes(h.content() if callable(h.content) else h.content)
    return str(path)


def prepare_problems(path: str, tmp_path: Path) -> list[str]:
    """What prepare reports on one file: convert (chat → contents) then validate, as the flow does."""
    if path.endswith(".csv"):
        return [str(p) for p in validate_test_csv(path).problems]
    out = tmp_path / "out" / "train.jsonl"
    try:
        convert_messages_file(path, out, limit=None)
    except DataError as e:
        assert not out.exists()  # nothing written, so nothing can be uploaded
        return [str(p) for p in e.problems]
    return [str(p) for p in validate_contents_file(out, "train", source_name=path).problems]


def assert_first(problems: list[str], path: str, h: Hostile, where: str | None = None) -> None:
    where = h.where if where is None else where
    if not where:
        assert problems == []
        return
    assert problems, f"{h.id}: no problem reported"
    assert problems[0].startswith(f"{path}:{where} "), problems[0]
    if where == h.where:
        assert h.says in problems[0]
    if h.only:
        assert len(problems) == 1, problems
    if h.then:
        assert problems[1].startswith(f"{path}:{h.then} "), problems[1]
    for p in problems:  # never a whole hostile line echoed back
        assert len(p) < len(path) + 300, p[:400]


@pytest.mark.parametrize("h", HOSTILE, ids=IDS)
def test_lint_reports_each_hostile_input_and_checks_the_next_file(tmp_path, h):
    path = place(tmp_path, h)
    after = tmp_path / "next.jsonl"
    after.write_bytes(NEXT)
    problems = [str(p) for p in lint_paths([path, str(after)])]
    assert problems[-1] == f"{after}:{NEXT_PROBLEM}"  # the next file is still checked
    assert_first(problems[:-1], path, h)


FILES = [h for h in HOSTILE if h.content is not None]
CSVS = [h for h in HOSTILE if h.name.endswith(".csv")]


@pytest.mark.parametrize("h", FILES, ids=[h.id for h in FILES])
def test_prepare_reports_each_hostile_input(tmp_path, h):
    path = place(tmp_path, h)
    assert_first(prepare_problems(path, tmp_path), path, h, h.prepare_where or None)


@pytest.mark.parametrize("h", CSVS, ids=[h.id for h in CSVS])
def test_evaluation_test_reader_raises_data_error_only(tmp_path, h):
    path = place(tmp_path, h)
    if not h.where:
        assert read_test_csv(path)
        return
    with pytest.raises(DataError) as e:
        read_test_csv(path)
    assert_first([str(p) for p in e.value.problems], path, h)


def test_cli_validate_checks_every_hostile_file_in_one_run(tmp_path):
    paths = []
    for i, h in enumerate(HOSTILE):
        d = tmp_path / f"{i:02d}"
        d.mkdir()
        paths.append(place(d, h))
    paths.append(str(tmp_path / "missing.jsonl"))
    proc = subprocess.run([sys.executable, "-m", "sftflow.cli.main", "validate", *paths],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"{len(paths)} file(s) checked")
    named = {line.split(":", 1)[0] for line in proc.stdout.splitlines()}
    assert named == {p for p, h in zip(paths, HOSTILE + [None]) if h is None or h.where}


def test_messages_never_echo_a_whole_line(tmp_path):
    huge = "x" * 100_000
    path = tmp_path / "tuned.jsonl"
    lines = [
        {"contents": CONTENTS["contents"], huge: 1},  # an unknown field named by a whole line
        {"contents": [{"role": huge, "parts": [{"text": "q"}]}, {"role": "model", "parts": [{"text": "a"}]}]},
        {"contents": [{"role": "\x1b[31mred", "parts": [{"text": "q"}]}, {"role": "model", "parts": [{"text": "a"}]}]},
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    chat_path = tmp_path / "chat.jsonl"
    chat_path.write_text(json.dumps({"messages": [{"role": huge, "content": "q"}]}) + "\n")
    csv_path = tmp_path / "test.csv"
    csv_path.write_text(f"{huge},output_text\na,b\n")
    problems = [str(p) for p in lint_paths([str(path), str(chat_path), str(csv_path)])]
    assert len(problems) >= 5
    for p in problems:
        assert len(p) < len(str(tmp_path)) + 250, p[:300]
        assert "\x1b" not in p  # a terminal escape is shown escaped
    assert any("..." in p for p in problems)


def test_an_over_long_line_is_never_read_whole(tmp_path):
    """50 MB on one line: peak memory stays near the cap, far below the line, on every reader."""
    big = tmp_path / "big.jsonl"
    with open(big, "wb") as f:
        f.write(GOOD_CHAT + b'{"messages": "')
        for _ in range(50):
            f.write(b"x" * 1_000_000)
        f.write(b'"}\n' + GOOD_CHAT)
    csv_big = tmp_path / "big.csv"
    with open(csv_big, "wb") as f:
        f.write(b"input_text,output_text\n")
        for _ in range(50):
            f.write(b"y" * 1_000_000)
        f.write(b",z\na,b\n")
    small = tmp_path / "small.jsonl"
    small.write_bytes(GOOD_CHAT)
    script = r"""
import resource, sys
from pathlib import Path
from sftflow.data.formats import convert_messages_file
from sftflow.data.lint import lint_paths
from sftflow.errors import DataError
def peak_mb(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
big, csv_big, small, out = sys.argv[1:]
lint_paths([small]); convert_messages_file(small, out)
base = peak_mb()
found = [str(p) for p in lint_paths([big, csv_big])]
for seed in (None, 7):
    try:
        convert_messages_file(big, out, limit=None, shuffle_seed=seed)
    except DataError as e:
        found += [str(p) for p in e.problems]
print(f"{base:.1f} {peak_mb():.1f}")
print("\n".join(found))
"""
    proc = subprocess.run([sys.executable, "-c", script, str(big), str(csv_big), str(small), str(tmp_path / "o.jsonl")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    first, *found = proc.stdout.splitlines()
    base, peak = map(float, first.split())
    assert found == [f"{big}:2: size: line of 50,000,017 bytes, over the 16,777,216-byte limit (far above any valid "
                     "example; is this one record per line?)",
                     f"{csv_big}:2: size: line of 50,000,003 bytes, over the 16,777,216-byte limit (far above any "
                     "valid example; is this one record per line?)"] + [found[0]] * 2
    # Reading the line whole would cost at least its 50 MB; the cap holds 16 MiB plus a 1 MiB piece.
    assert peak - base < MAX_LINE_BYTES / 2**20 + 12, (base, peak)


def test_read_lines_cap_boundary(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"123456\n" + b"1234567\n" + b"12345678\n" + b"12345678" * 3 + b"\nend" + b"\n12345678")
    with open(path, "rb") as f:
        got = list(read_lines(f, limit=7))
    # a line of `limit` bytes (newline not counted) is kept; one byte more is skipped, size counted
    assert got == [(b"123456\n", 7), (b"1234567\n", 8), (None, 9), (None, 25), (b"end\n", 4), (None, 8)]


def test_shown_clips_untrusted_text():
    from sftflow.data.reading import shown

    assert shown("role") == "'role'"
    long = shown("z" * 1000)
    assert len(long) == SHOWN_CHARS and long.endswith("...")
    assert shown("\ud800\x1b") == "'\\ud800\\x1b'"


@pytest.mark.slow
def test_prepare_uploads_nothing_when_a_chat_or_gemini_file_has_a_lone_surrogate(tmp_path, gcs_bucket):
    """Both files are checked (the first bad one does not stop the second) and nothing reaches the bucket."""
    from flows.prepare_data import prepare_data
    from sftflow.infra import storage

    train = tmp_path / "train.jsonl"  # chat format: conversion used to crash on it
    train.write_bytes(GOOD_CHAT * 3 + chat("broken emoji \\ud83d"))
    val = tmp_path / "val.jsonl"  # Gemini format: used to pass through and be uploaded as is
    bad = {"contents": [{"role": "user", "parts": [{"text": "q"}]}, {"role": "model", "parts": [{"text": "\udfff"}]}]}
    val.write_text(json.dumps(CONTENTS) + "\n" + json.dumps(bad) + "\n")
    config = {"local_root": str(tmp_path / "root"), "bucket": gcs_bucket,
              "train_uri": str(train), "val_uri": str(val)}
    with pytest.raises(DataError) as e:
        prepare_data(config=config)
    assert [str(p).split(": lone surrogate")[0] for p in e.value.problems] == [
        f"{train}:4: messages[0].content", f"{val}:2: contents[1].parts[0].text"]
    # nothing uploaded: the only objects are Prefect's own task results (prefect_result_storage, in the bucket)
    assert [u for u in storage.list_uris(gcs_bucket + "/") if "/prefect-results/" not in u] == []


def test_cli_prints_a_file_name_that_is_not_utf8(tmp_path):
    """A name with undecodable bytes (a surrogate-escaped str in Python) is printed escaped, not a crash."""
    name = os.fsdecode(b"caf\xe9.jsonl")
    (tmp_path / name).write_bytes(NEXT)
    env = dict(os.environ, PYTHONIOENCODING="utf-8")  # strict UTF-8 output, where such a name used to crash
    proc = subprocess.run([sys.executable, "-m", "sftflow.cli.main", "validate", name], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stdout.splitlines() == ["caf\\udce9.jsonl:" + NEXT_PROBLEM]


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_a_device_is_refused_not_read_forever(tmp_path, device):
    after = tmp_path / "next.jsonl"
    after.write_bytes(NEXT)
    assert [str(p) for p in lint_paths([device, str(after)])] == [
        f"{device}:0: file: not a regular file (a device or a pipe?)", f"{after}:{NEXT_PROBLEM}"]
