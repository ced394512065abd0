"""Gemini 2.5 Flash supervised-tuning dataset rules, checked locally before any upload.

Vertex AI only reports a bad row after the dataset is uploaded and a job is queued
(GoogleCloudPlatform/generative-ai#254), so every rule here runs on this machine first and
names the file, line and field of each problem.

Sources:
  [FORMAT] Vertex AI docs, "Prepare supervised fine-tuning data for Gemini models"
           https://cloud.google.com/vertex-ai/generative-ai/docs/models/gemini-supervised-tuning-prepare
  [LIMITS] Vertex AI docs, "About supervised fine-tuning for Gemini models", section
           "Limitations", Gemini 2.5 Flash
           https://cloud.google.com/vertex-ai/generative-ai/docs/models/gemini-supervised-tuning
  [NOTEBOOK] Google's SFT summarisation notebook, which estimates tokens as characters / 4
           https://github.com/GoogleCloudPlatform/generative-ai/blob/main/gemini/tuning/sft_gemini_summarization.ipynb
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from sftflow.data.reading import (
    decode_line,
    find_lone_surrogate,
    read_lines,
    shown,
    shown_key,
    sniff_jsonl,
    too_long_message,
)
from sftflow.errors import DataError
from sftflow.infra.progress import ProgressFn

# --------------------------------------------------------------------------- limits [LIMITS]

MAX_EXAMPLE_TOKENS = 131_072  # input + output tokens per training example
MAX_TRAIN_EXAMPLES = 1_000_000  # text-only examples in a training dataset
MAX_VAL_EXAMPLES = 5_000  # examples in a validation dataset
MIN_EXAMPLES = 1
MAX_TRAIN_FILE_BYTES = 1_000_000_000  # "1 GB" training file; decimal GB, the stricter reading

MAX_STORED_PROBLEMS = 1000  # problems kept in memory; all are counted

TOP_FIELDS = ("contents", "systemInstruction")  # [FORMAT] example fields (text-only tuning)
CONTENT_FIELDS = ("role", "parts")  # [FORMAT] Content
PART_FIELDS = ("text",)  # [FORMAT] Part; text-only (fileData etc. are not used by sftflow)
ROLES = ("user", "model")  # [FORMAT] Content.role

Kind = Literal["train", "val"]


# --------------------------------------------------------------------------- problems


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a data file; line 0 means the whole file."""

    path: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.field}: {self.message}"


class ProblemLog:
    """Collects problems, keeping the first `cap` so memory stays flat on huge bad files."""

    def __init__(self, cap: int | None = None):
        self.cap = MAX_STORED_PROBLEMS if cap is None else cap
        self.problems: list[Problem] = []
        self.count = 0

    def add(self, problem: Problem) -> None:
        self.count += 1
        if len(self.problems) < self.cap:
            self.problems.append(problem)

    def extend(self, problems: Iterable[Problem]) -> None:
        for p in problems:
            self.add(p)

    def raise_if_any(self) -> None:
        if self.count:
            raise DataError(self.problems, self.count)


# --------------------------------------------------------------------------- tokens and cost


def estimate_tokens(text: str) -> int:
    """Token estimate: characters / 4, rounded up, as Google's SFT notebook does [NOTEBOOK].

    One function so a real tokenizer (e.g. the count_tokens API) can replace it.
    """
    return (len(text) + 3) // 4


# --------------------------------------------------------------------------- one line


def parse_json_line(raw: bytes, path: str, line: int) -> tuple[dict | None, Problem | None]:
    """Decode one JSONL line into a dict: each line must be one JSON object [FORMAT].

    Never raises on any input: bad bytes, NUL, nesting too deep to parse, an integer too long
    to convert and lone surrogates (valid JSON, not Unicode) each become a Problem.
    """
    text, bad = decode_line(raw, first=line == 1)
    if bad:
        return None, Problem(path, line, *bad)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return None, Problem(path, line, "json", f"invalid JSON: {e.msg} (column {e.colno})")
    except RecursionError:
        return None, Problem(path, line, "json", "nested too deeply to parse (a tuning example is a few "
                             "levels deep)")
    except ValueError as e:  # e.g. an integer of more than 4,300 digits
        return None, Problem(path, line, "json", f"invalid JSON: {str(e).split(':')[0][:80]}")
    if not isinstance(obj, dict):
        return None, Problem(path, line, "example", f"must be a JSON object, got {_type(obj)}")
    if b"\\ud" in raw or b"\\uD" in raw:  # only an escape makes a surrogate: skip the walk otherwise
        found = find_lone_surrogate(obj)
        if found:
            return None, Problem(path, line, *found)
    return obj, None


def _type(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), "number" if isinstance(v, int | float) else type(v).__name__
    )


# --------------------------------------------------------------------------- example rules
# Each rule takes one parsed example and yields (field path, message). Rules tolerate
# malformed structure that another rule reports, so each problem is reported once.

Finding = tuple[str, str]


def _unknown(obj: dict, allowed: tuple[str, ...], prefix: str) -> Iterator[Finding]:
    for key in obj:
        if key not in allowed:
            hint = difflib.get_close_matches(key, allowed, n=1)
            tip = f"; did you mean '{hint[0]}'?" if hint else ""
            yield f"{prefix}{shown_key(key)}", f"unknown field (allowed: {', '.join(allowed)}){tip}"


def _turns(ex: dict) -> list[tuple[int, dict]]:
    c = ex.get("contents")
    return [(i, t) for i, t in enumerate(c) if isinstance(t, dict)] if isinstance(c, list) else []


def _part_lists(ex: dict) -> Iterator[tuple[str, Any]]:
    """(field prefix, parts value) for systemInstruction and every turn."""
    si = ex.get("systemInstruction")
    if isinstance(si, dict):
        yield "systemInstruction", si.get("parts")
    for i, turn in _turns(ex):
        yield f"contents[{i}]", turn.get("parts")


def _texts(ex: dict) -> Iterator[tuple[str, str]]:
    for prefix, parts in _part_lists(ex):
        if isinstance(parts, list):
            for j, part in enumerate(parts):
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    yield f"{prefix}.parts[{j}].text", part["text"]


def rule_known_fields(ex: dict) -> Iterator[Finding]:
    """[FORMAT] an example has contents and optional systemInstruction; Content has role and
    parts; a text Part has text. Anything else (e.g. the typo `contens`) is a mistake."""
    yield from _unknown(ex, TOP_FIELDS, "")
    si = ex.get("systemInstruction")
    if "systemInstruction" in ex and not isinstance(si, dict):
        yield "systemInstruction", f"must be an object, got {_type(si)}"
    elif isinstance(si, dict):
        yield from _unknown(si, CONTENT_FIELDS, "systemInstruction.")
    for i, turn in _turns(ex):
        yield from _unknown(turn, CONTENT_FIELDS, f"contents[{i}].")
    for prefix, parts in _part_lists(ex):
        if isinstance(parts, list):
            for j, part in enumerate(parts):
                if isinstance(part, dict):
                    yield from _unknown(part, PART_FIELDS, f"{prefix}.parts[{j}].")


def rule_contents_list(ex: dict) -> Iterator[Finding]:
    """[FORMAT] `contents` is required: a non-empty list of Content objects."""
    if "contents" not in ex:
        yield "contents", "required field missing"
        return
    c = ex["contents"]
    if not isinstance(c, list):
        yield "contents", f"must be a list of turns, got {_type(c)}"
    elif not c:
        yield "contents", "must contain at least one turn"
    else:
        for i, turn in enumerate(c):
            if not isinstance(turn, dict):
                yield f"contents[{i}]", f"must be an object with role and parts, got {_type(turn)}"


def rule_parts(ex: dict) -> Iterator[Finding]:
    """[FORMAT] Content.parts is a non-empty list of Part objects whose `text` is a string."""
    for prefix, parts in _part_lists(ex):
        if parts is None:
            yield f"{prefix}.parts", "required field missing"
        elif not isinstance(parts, list):
            yield f"{prefix}.parts", f"must be a list, got {_type(parts)}"
        elif not parts:
            yield f"{prefix}.parts", "must contain at least one part"
        else:
            for j, part in enumerate(parts):
                where = f"{prefix}.parts[{j}]"
                if not isinstance(part, dict):
                    yield where, f"must be an object with text, got {_type(part)}"
                elif "text" not in part:
                    yield f"{where}.text", "required field missing (text-only tuning)"
                elif not isinstance(part["text"], str):
                    yield f"{where}.text", f"must be a string, got {_type(part['text'])}"


def rule_text_not_empty(ex: dict) -> Iterator[Finding]:
    """[FORMAT] every text part carries content; empty text trains nothing and is rejected."""
    for where, text in _texts(ex):
        if not text.strip():
            yield where, "empty or whitespace-only text"


def rule_roles(ex: dict) -> Iterator[Finding]:
    """[FORMAT] Content.role is `user` or `model` (chat's `assistant` must become `model`)."""
    for i, turn in _turns(ex):
        if "role" not in turn:
            yield f"contents[{i}].role", "required field missing (user or model)"
        elif turn["role"] not in ROLES:
            tip = "; use 'model'" if turn["role"] == "assistant" else ""
            yield f"contents[{i}].role", f"role {shown(turn['role'])} not allowed (user, model){tip}"


def rule_turn_order(ex: dict) -> Iterator[Finding]:
    """[FORMAT] turns alternate user/model, starting with user."""
    prev = None
    for i, turn in _turns(ex):
        role = turn.get("role")
        if role not in ROLES:
            prev = None  # rule_roles reports it; don't cascade
            continue
        if i == 0 and role != "user":
            yield f"contents[{i}].role", "the first turn must be 'user'"
        elif prev is not None and role == prev:
            yield f"contents[{i}].role", f"two '{role}' turns in a row; turns must alternate"
        prev = role


def rule_last_turn_model(ex: dict) -> Iterator[Finding]:
    """[FORMAT] the last turn is the model's: it is the output the model is tuned to produce."""
    c = ex.get("contents")
    if isinstance(c, list) and c and isinstance(c[-1], dict):
        role = c[-1].get("role")
        if role in ROLES and role != "model":
            yield f"contents[{len(c) - 1}].role", "the last turn must be 'model' (the target output)"


EXAMPLE_RULES: tuple[Callable[[dict], Iterable[Finding]], ...] = (
    rule_known_fields,
    rule_contents_list,
    rule_parts,
    rule_text_not_empty,
    rule_roles,
    rule_turn_order,
    rule_last_turn_model,
)


def example_tokens(ex: dict) -> int:
    """Estimated tokens of one example: system instruction and all turns count [FORMAT]."""
    return sum(estimate_tokens(t) for _, t in _texts(ex))


def rule_token_limit(tokens: int) -> Iterator[Finding]:
    """[LIMITS] at most 131,072 input+output tokens per example."""
    if tokens > MAX_EXAMPLE_TOKENS:
        yield "contents", f"about {tokens} tokens (chars/4), over the {MAX_EXAMPLE_TOKENS} limit"


def check_example(ex: dict, path: str, line: int) -> tuple[list[Problem], int]:
    """All example rules on one parsed example → (problems, estimated tokens)."""
    tokens = example_tokens(ex)
    problems = [Problem(path, line, f, m) for rule in EXAMPLE_RULES for f, m in rule(ex)]
    problems += [Problem(path, line, f, m) for f, m in rule_token_limit(tokens)]
    return problems, tokens


# --------------------------------------------------------------------------- file rules


def rule_example_count(n: int, kind: Kind) -> Iterator[Finding]:
    """[LIMITS] ≥ 1 example; training ≤ 1,000,000 text examples; validation ≤ 5,000."""
    if n < MIN_EXAMPLES:
        yield "examples", "no examples: the file is empty"
    cap = MAX_TRAIN_EXAMPLES if kind == "train" else MAX_VAL_EXAMPLES
    if n > cap:
        yield "examples", f"{n} examples; a {kind} dataset allows at most {cap}"


def rule_file_size(size: int, kind: Kind) -> Iterator[Finding]:
    """[LIMITS] a training dataset file is at most 1 GB."""
    if kind == "train" and size > MAX_TRAIN_FILE_BYTES:
        yield "file", f"{size} bytes; a training file allows at most {MAX_TRAIN_FILE_BYTES}"


@dataclass
class DatasetReport:
    """What validating one contents-format file found."""

    path: str
    kind: Kind
    examples: int = 0
    estimated_tokens: int = 0
    max_example_tokens: int = 0
    size_bytes: int = 0
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def raise_if_problems(self) -> None:
        if not self.ok:
            raise DataError(self.problems, self.problem_count)


BLANK_LINE = "line"  # field of the problem reported for a blank line


def line_too_long(path: str, line: int, size: int) -> Problem:
    """The problem for a line over reading.MAX_LINE_BYTES (still one example to the service)."""
    return Problem(path, line, "size", too_long_message(size))


def validate_records(
    path: str,
    kind: Kind,
    records: Iterable[tuple[int, dict | list[Problem], int]],
    *,
    on_progress: ProgressFn | None = None,
    total: int | None = None,
    every: int = 10_000,
) -> DatasetReport:
    """Apply every rule to a stream of (line, example or its problems, bytes) records.

    Shared by file validation and by lint of chat files (which feeds converted examples), so
    both report identically. Memory stays flat: examples are checked and dropped.
    """
    if kind not in ("train", "val"):
        raise ValueError(f"kind must be 'train' or 'val', not {kind!r}")
    report = DatasetReport(path=path, kind=kind)
    log = ProblemLog()
    for line, item, nbytes in records:
        report.size_bytes += nbytes
        if isinstance(item, list):
            log.extend(item)
            if len(item) == 1 and item[0].field == BLANK_LINE:
                continue  # not an example, but the service would still read the line
        report.examples += 1
        if not isinstance(item, list):
            problems, tokens = check_example(item, path, line)
            log.extend(problems)
            report.estimated_tokens += tokens
            report.max_example_tokens = max(report.max_example_tokens, tokens)
        if on_progress and report.examples % every == 0:
            on_progress(report.examples, total, {"problems": log.count})
    for f, m in rule_example_count(report.examples, kind):
        log.add(Problem(path, 0, f, m))
    for f, m in rule_file_size(report.size_bytes, kind):
        log.add(Problem(path, 0, f, m))
    report.problems, report.problem_count = log.problems, log.count
    if on_progress:
        on_progress(report.examples, report.examples, {"problems": log.count})
    return report


def iter_contents_records(
    path: str, name: str | None = None
) -> Iterator[tuple[int, dict | list[Problem], int]]:
    """Stream a contents JSONL file as (line, example or problems, bytes) without loading it.

    Problems name the file `name` (default: `path`)."""
    opened, path = path, name or path
    with open(opened, "rb") as f:
        whole = sniff_jsonl(f)
        if whole:
            yield whole[0], [Problem(path, *whole)], 0
            return
        for n, (raw, size) in enumerate(read_lines(f), 1):
            if raw is None:
                yield n, [line_too_long(path, n, size)], size
                continue
            body = raw.rstrip(b"\r\n")
            if not body.strip():
                # A blank line is a line Vertex would try to read as an example.
                blank = Problem(path, n, BLANK_LINE, "blank line; each line must be one example")
                yield n, [blank], size
                continue
            obj, problem = parse_json_line(body, path, n)
            yield n, ([problem] if problem else obj), size


def validate_contents_file(
    path: str | os.PathLike,
    kind: Kind,
    *,
    on_progress: ProgressFn | None = None,
    source_name: str | None = None,
) -> DatasetReport:
    """Check a Gemini tuning JSONL file line by line against every rule (memory flat).

    `source_name` is the name problems use (e.g. the URI the file was downloaded from).
    """
    path = os.fspath(path)
    name = source_name or path
    records = iter_contents_records(path, name)
    return validate_records(name, kind, records, on_progress=on_progress)
