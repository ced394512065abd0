"""Supervised-tuning datasets as Vertex reads them: fetched from the GCS emulator, checked row by row.

What Gemini supervised tuning requires of a JSONL dataset
(https://cloud.google.com/vertex-ai/generative-ai/docs/models/gemini-supervised-tuning-prepare):
one example per line, `{"systemInstruction"?: {"role"?, "parts": [{"text"}]}, "contents": [...]}` where
`contents` is a non-empty list of `{"role": "user"|"model", "parts": [{"text": ...}]}` turns that alternate,
start with `user` and end with `model` (the target output); names as the API's own Content schema
(checked against Google's API description, so an OpenAI `messages` row is refused by name). A row Vertex
refuses fails the job with an error naming the file and row. A row over the model's per-example token
limit (131,072 input+output tokens) is truncated, not refused: it is counted in
`totalTruncatedExampleCount` and listed (1-based) in `truncatedExampleIndices`. The training file is at
most 1 GB, the validation set at most 5,000 examples
(https://cloud.google.com/vertex-ai/generative-ai/docs/models/tune-text-models-supervised).
Tokens are the test server's own tokenizer (`count_text_tokens`, what its countTokens answers), so the
bill a job reports equals what countTokens said of the same rows.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

from tests.servers import discovery
from tests.servers import vertex_schema as schema

MAX_FILE_BYTES = 1 << 30
_CONTENT = "GoogleCloudAiplatformV1beta1Content"


@dataclass
class DataCheck:
    examples: int = 0
    tokens: int = 0
    characters: int = 0
    truncated: list[int] = field(default_factory=list)
    error: str | None = None  # the first row Vertex refuses, named


def read(gcs_url: str, uri: str) -> bytes | None:
    """The object's bytes from the emulator, None when it does not exist."""
    bucket, _, obj = uri[5:].partition("/")
    url = f"{gcs_url}/storage/v1/b/{quote(bucket, safe='')}/o/{quote(obj, safe='')}?alt=media"
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def _row_problem(row: object) -> str | None:
    """Why Vertex refuses one example (None: it is fine)."""
    if not isinstance(row, dict):
        return "an example must be a JSON object"
    unknown = sorted(set(row) - {"contents", "systemInstruction", "system_instruction"})
    if unknown:
        return f'Unknown name "{unknown[0]}": an example has contents and an optional systemInstruction'
    contents = row.get("contents")
    if not isinstance(contents, list) or not contents:
        return "contents is required and must be a non-empty list of turns"
    system = row.get("systemInstruction", row.get("system_instruction"))
    for where, value in ([("systemInstruction", system)] if system is not None else []) + [
            (f"contents[{i}]", c) for i, c in enumerate(contents)]:
        problems, _ = discovery.check("v1beta1", _CONTENT, value)
        if problems:
            return f"{where}: {problems[0][1]}"
        parts = value.get("parts") if isinstance(value, dict) else None
        if not parts or not all(isinstance(p, dict) and isinstance(p.get("text"), str) and p["text"].strip()
                                for p in parts):
            return f"{where}.parts must hold at least one part, each with non-empty text"
    prev = None
    for i, turn in enumerate(contents):
        role = turn.get("role")
        if role not in ("user", "model"):
            return f"contents[{i}].role must be 'user' or 'model', got {json.dumps(role)}"
        if i == 0 and role != "user":
            return "contents[0].role: the first turn must be 'user'"
        if role == prev:
            return f"contents[{i}].role: turns must alternate between 'user' and 'model'"
        prev = role
    if prev != "model":
        return f"contents[{len(contents) - 1}].role: the last turn must be 'model'"
    return None


def texts(row: dict) -> list[str]:
    system = row.get("systemInstruction", row.get("system_instruction")) or {}
    turns = [system, *row["contents"]]
    return [p["text"] for t in turns for p in (t.get("parts") or []) if isinstance(p, dict) and "text" in p]


def check(data: bytes, uri: str, limit: int, count: Callable[[str], int], *, validation: bool) -> DataCheck:
    """Every row of one dataset file checked (`limit`: the model's tokens per example); the totals Vertex reports."""
    out = DataCheck()
    if len(data) > MAX_FILE_BYTES:
        out.error = f"Dataset {uri} is {len(data)} bytes; the limit is 1 GB."
        return out
    for line, raw in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except ValueError as exc:
            out.error = f"Dataset {uri} row {line}: invalid JSON ({exc.msg})."
            return out
        problem = _row_problem(row)
        if problem:
            out.error = f"Dataset {uri} row {line}: {problem}."
            return out
        out.examples += 1
        words = texts(row)
        tokens = sum(count(t) for t in words)
        if tokens > limit:
            out.truncated.append(out.examples)
            tokens = limit
        out.tokens += tokens
        out.characters += sum(len(t) for t in words)
    if out.examples == 0:
        out.error = f"Dataset {uri} has no examples."
    elif validation and out.examples > schema.VALIDATION_EXAMPLES_MAX:
        out.error = (f"Dataset {uri} has {out.examples} examples; a validation dataset holds at most "
                     f"{schema.VALIDATION_EXAMPLES_MAX}.")
    return out


def billable_tokens(data: bytes, epochs: int = 1) -> int:
    """What a job on this training file reports as `totalBillableTokenCount` (for tests to assert the data's bill)."""
    from tests.servers.vertex_server import count_text_tokens

    rows = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
    return epochs * sum(count_text_tokens(t) for row in rows for t in texts(row))
