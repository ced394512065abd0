"""Prompt → article text, sentence splitting, and reading chat/contents training files.

Kept free of torch so that it is cheap to import and easy to test.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

_NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
_COUNT_RE = re.compile(r"\b(?:about|around|roughly|exactly|in)?\s*(one|two|three|four|five|six|\d)\s+sentences?\b", re.I)
_INSTRUCTION_RE = re.compile(r"^[^\n]{0,300}?\barticle\s*:\s*", re.I)
# A sentence ends at . ! ? (optionally followed by quotes/brackets) before whitespace + capital/digit/quote.
_SPLIT_RE = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


@dataclass(frozen=True)
class Example:
    """One training example: the user prompt and the model's reference answer."""

    prompt: str
    answer: str
    system: str | None = None


def split_prompt(prompt: str) -> tuple[str, str]:
    """(instruction, article). The instruction is the first paragraph when it ends with ':'
    or names the article; otherwise everything is the article."""
    head, sep, rest = prompt.partition("\n\n")
    if sep and rest.strip() and (head.rstrip().endswith(":") or "article" in head.lower()):
        return head.strip(), rest.strip()
    m = _INSTRUCTION_RE.match(prompt)
    if m:
        return prompt[: m.end()].strip(), prompt[m.end():].strip()
    return "", prompt.strip()


def requested_sentences(instruction: str) -> int | None:
    """'... with about two sentences ...' → 2; None when the prompt names no count."""
    m = _COUNT_RE.search(instruction or "")
    if not m:
        return None
    w = m.group(1).lower()
    return _NUMBERS.get(w) or int(w)


def split_sentences(text: str, max_chars: int = 400) -> list[str]:
    """Split into sentences on line breaks and sentence punctuation; very long ones are cut."""
    out: list[str] = []
    for line in re.split(r"\n+", text):
        line = line.strip()
        if not line:
            continue
        for s in _SPLIT_RE.split(line):
            s = s.strip()
            while len(s) > max_chars:
                cut = s.rfind(" ", 0, max_chars)
                cut = cut if cut > 0 else max_chars
                out.append(s[:cut].strip())
                s = s[cut:].strip()
            if s:
                out.append(s)
    return out


def _text_of(parts: list) -> str:
    return "".join(p.get("text", "") for p in parts if isinstance(p, dict))


def parse_line(obj: dict, where: str) -> Example:
    """A Gemini `contents` line or a chat `messages` line → Example (first user/model turns)."""
    system = None
    if "contents" in obj:
        turns = [(c.get("role"), _text_of(c.get("parts", []))) for c in obj["contents"]]
        si = obj.get("systemInstruction") or obj.get("system_instruction")
        if isinstance(si, dict):
            system = _text_of(si.get("parts", [])) or None
    elif "messages" in obj:
        turns = []
        for m in obj["messages"]:
            if m.get("role") == "system":
                system = m.get("content")
            else:
                turns.append(("model" if m.get("role") == "assistant" else m.get("role"), m.get("content", "")))
    else:
        raise ValueError(f"{where}: field 'contents' (or 'messages') missing")
    user = next((t for r, t in turns if r == "user"), None)
    model = next((t for r, t in turns if r == "model"), None)
    if not user or model is None:
        raise ValueError(f"{where}: field 'contents': needs a user turn and a model turn")
    return Example(prompt=user, answer=model, system=system)


def read_examples(path: str | Path) -> list[Example]:
    """All examples of a local JSONL file; errors name file and line."""
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{i}: invalid JSON ({exc.msg})") from None
            out.append(parse_line(obj, f"{path}:{i}"))
    return out
