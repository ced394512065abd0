"""Chat `messages` JSONL → Gemini tuning `contents` JSONL, streaming.

The codelab's WikiLingua samples are chat-style (`{"messages": [{"role", "content"}]}`) while
Gemini tuning wants `{"systemInstruction", "contents": [{"role", "parts": [{"text"}]}]}`.
Conversion never loads the file: it reads line by line (or, for a seeded shuffle, keeps only
an array of line offsets), writes through an atomic writer, and leaves no output if any
source line is bad.
"""

from __future__ import annotations

import json
import os
import random
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

from sftflow.data.reading import read_lines, shown, sniff_jsonl
from sftflow.data.rules import Problem, ProblemLog, check_example, line_too_long, parse_json_line
from sftflow.errors import DataError
from sftflow.infra.progress import ProgressFn
from sftflow.infra.storage import atomic_local_writer

#: chat role → Gemini role; `system` goes to systemInstruction instead.
ROLE_MAP = {"user": "user", "assistant": "model", "model": "model"}
CHAT_ROLES = ("system", "user", "assistant", "model")
SYSTEM_JOIN = "\n\n"


@dataclass
class ConvertReport:
    """Counts of one conversion. `examples_in` = non-blank source lines read."""

    examples_in: int = 0
    examples_out: int = 0
    problems: list[Problem] = field(default_factory=list)


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # built once: faster


def dumps_line(obj: dict) -> str:
    """The one serialisation used for output lines, so equal inputs give equal bytes.

    Same bytes as json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\\n".
    """
    return _ENCODER.encode(obj) + "\n"


def _message_problems(m: object, path: str, line: int, where: str) -> list[Problem]:
    if not isinstance(m, dict):
        return [Problem(path, line, where, "must be an object with role and content")]
    out = []
    role = m.get("role")
    if not isinstance(role, str) or role not in CHAT_ROLES:
        what = "required field missing" if "role" not in m else f"unknown role {shown(role)}"
        out.append(Problem(path, line, f"{where}.role", f"{what} (allowed: {', '.join(CHAT_ROLES)})"))
    if not isinstance(m.get("content"), str):
        what = "required field missing" if "content" not in m else "must be a string"
        out.append(Problem(path, line, f"{where}.content", what))
    return out


def convert_parsed(obj: dict, path: str, line: int) -> tuple[dict | None, list[Problem]]:
    """Convert one parsed chat example; a `contents` example is returned as is."""
    if "messages" not in obj:
        if "contents" in obj:
            return obj, []
        return None, [
            Problem(path, line, "messages", "required field missing (expected a chat example "
                    '{"messages": [...]} or a tuning example {"contents": [...]})')
        ]
    messages = obj["messages"]
    if not isinstance(messages, list):
        return None, [Problem(path, line, "messages", "must be a list of messages")]
    problems: list[Problem] = []
    system: list[str] = []
    contents: list[dict] = []
    for i, m in enumerate(messages):
        if type(m) is dict:  # fast path for a well-formed message; checks below otherwise
            role, content = m.get("role"), m.get("content")
            if type(role) is str and type(content) is str:
                if role in ROLE_MAP:
                    contents.append({"role": ROLE_MAP[role], "parts": [{"text": content}]})
                    continue
                if role == "system":
                    system.append(content)
                    continue
        problems.extend(_message_problems(m, path, line, f"messages[{i}]"))
    if problems:
        return None, problems
    out: dict = {}
    if system:
        out["systemInstruction"] = {"parts": [{"text": SYSTEM_JOIN.join(system)}]}
    out["contents"] = contents
    return out, []


def convert_example(obj: dict, *, path: str = "<example>", line: int = 0) -> dict:
    """One chat example → one Gemini tuning example; raises DataError naming the field."""
    if not isinstance(obj, dict):
        raise DataError([Problem(path, line, "example", "must be a JSON object")])
    out, problems = convert_parsed(obj, path, line)
    if problems:
        raise DataError(problems)
    return out  # type: ignore[return-value]


def convert_line(raw: bytes, path: str, line: int) -> tuple[str | None, list[Problem]]:
    """One raw source line → one output line (None for a blank line or a bad one)."""
    body = raw.rstrip(b"\r\n")
    if not body or body.isspace():
        return None, []
    obj, problem = parse_json_line(body, path, line)
    if problem:
        return None, [problem]
    out, problems = convert_parsed(obj, path, line)  # type: ignore[arg-type]
    if problems:
        return None, problems
    # Gemini's per-example rules on the converted example, named by the *source* line, so a
    # problem points at the line the user has to fix (not at a line of an intermediate file).
    problems, _ = check_example(out, path, line)  # type: ignore[arg-type]
    if problems:
        return None, problems
    if out is obj:
        # Already in tuning format: pass the source line through byte for byte.
        text = body.decode("utf-8")
        return (text[1:] if text.startswith("\ufeff") else text) + "\n", []
    return dumps_line(out), []  # type: ignore[arg-type]


def line_offsets(f: IO[bytes], too_long: set[int] | None = None) -> array:
    """Byte offset of every line start, plus the file's end (8 bytes a line kept in memory).

    Lines over the length cap are never read whole; their indexes go into `too_long`."""
    offsets = array("q")
    pos = 0
    for raw, size in read_lines(f):
        if raw is None and too_long is not None:
            too_long.add(len(offsets))
        offsets.append(pos)
        pos += size
    offsets.append(pos)
    return offsets


def numbered_lines(f: IO[bytes], shuffle_seed: int | None = None) -> Iterator[tuple[int, bytes | None, int]]:
    """(1-based line number, raw line or None if over the length cap, size) in file order, or
    in a seeded shuffled order. Memory stays bounded whatever the line lengths."""
    if shuffle_seed is None:
        for n, (raw, size) in enumerate(read_lines(f), 1):
            yield n, raw, size
        return
    too_long: set[int] = set()
    offsets = line_offsets(f, too_long)
    order = array("q", range(len(offsets) - 1))
    random.Random(shuffle_seed).shuffle(order)
    fd = f.fileno()
    for idx in order:
        # pread reads exactly one line; seek+readline would refill an 8 KiB buffer each time.
        start, size = offsets[idx], offsets[idx + 1] - offsets[idx]
        yield idx + 1, (None if idx in too_long else os.pread(fd, size, start)), size


def convert_messages_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    limit: int | None = None,
    shuffle_seed: int | None = None,
    on_progress: ProgressFn | None = None,
    every: int = 10_000,
    source_name: str | None = None,
) -> ConvertReport:
    """Convert a chat JSONL file into a Gemini tuning JSONL file, keeping at most `limit` (None: all; a run
    passes its `limit` setting, so this module needs nothing of sftflow.config).

    With `shuffle_seed` the kept examples are a seeded random choice (same seed, same bytes).
    If any source line read is bad, raises DataError with every problem and writes nothing.
    `source_name` is the name problems use (e.g. the URI that `src` was downloaded from).
    """
    if limit is not None and limit < 1:
        raise ValueError("limit must be >= 1 or None")
    path = source_name or os.fspath(src)
    report = ConvertReport()
    log = ProblemLog()
    with open(src, "rb") as f, atomic_local_writer(dst, "w") as out:
        whole = sniff_jsonl(f)
        if whole:
            log.add(Problem(path, *whole))
        for n, raw, size in ([] if whole else numbered_lines(f, shuffle_seed)):
            if limit is not None and report.examples_out >= limit:
                break
            if raw is None:
                text, problems = None, [line_too_long(path, n, size)]
            else:
                text, problems = convert_line(raw, path, n)
            if problems:
                report.examples_in += 1
                log.extend(problems)
                continue
            if text is None:
                continue
            report.examples_in += 1
            if not log.count:  # once a problem is found the output is discarded anyway
                out.write(text)
            report.examples_out += 1
            if on_progress and report.examples_out % every == 0:
                on_progress(report.examples_out, limit, {"problems": log.count})
        log.raise_if_any()  # inside the writer: the temp file is removed, dst never appears
    if on_progress:
        on_progress(report.examples_out, report.examples_out, {"problems": 0})
    return report
