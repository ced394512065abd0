"""Reading data files nobody has checked yet: bounded lines, strict decoding, a shape sniff.

Every reader of a user's data file goes through here so that no input can crash the
validator or make its memory grow with the file: a 50 MB line, bytes that are not UTF-8, a
NUL byte, a lone surrogate, a line nested 100,000 levels deep or a JSON array each become one
problem at its line, and the next line (and the next file) is still checked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, Any

#: Longest line any reader takes into memory, in bytes (JSONL lines and physical CSV lines).
#: Far above any valid example: Gemini 2.5 Flash allows 131,072 tokens per tuning example
#: (https://cloud.google.com/vertex-ai/generative-ai/docs/models/gemini-supervised-tuning), which
#: the rules estimate as 4 characters each (~524,288 characters). Even written in the costliest
#: JSON that still counts as few tokens — every character an escaped astral symbol
#: (`\ud83d\ude00`, 12 bytes) and 4 of them per turn (~45 bytes of structure each) — such an
#: example is 131,072 x (48 + 45) bytes ~ 12.2 MB, under 16 MiB. A test-set input is bounded
#: the same way by the model's 1,048,576-token input limit
#: (https://cloud.google.com/vertex-ai/generative-ai/docs/models/gemini/2-5-flash): ~4 M
#: characters, at most 16 MiB of UTF-8. A longer line is reported and skipped, never read whole.
MAX_LINE_BYTES = 16 * 1024 * 1024

_CHUNK = 1 << 20  # bytes read at a time from a line longer than this

SHOWN_CHARS = 80  # characters of untrusted text an error message may quote


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """`value` (text from an unchecked file) as safe to print in an error message.

    repr() escapes control characters, ANSI escapes and lone surrogates; long values are cut
    to `limit` characters with an ellipsis, so a message never echoes a whole line.
    """
    return clip(repr(value), limit)


def clip(text: str, limit: int = SHOWN_CHARS) -> str:
    """`text` cut to `limit` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown_key(key: str) -> str:
    """A JSON key inside a field path: as is when short and printable, else like `shown`."""
    return key if len(key) <= SHOWN_CHARS and key.isprintable() else shown(key)


def too_long_message(nbytes: int, limit: int = MAX_LINE_BYTES) -> str:
    return (f"line of {nbytes:,} bytes, over the {limit:,}-byte limit (far above any valid example; "
            "is this one record per line?)")


def read_lines(f: IO[bytes], limit: int = MAX_LINE_BYTES) -> Iterator[tuple[bytes | None, int]]:
    """(line, size in bytes) for every line of a binary file; line is None when over `limit`.

    `limit` counts the line without its newline. A line is read a megabyte at a time (one read
    for any ordinary line); once past `limit` its pieces are dropped and only its size is
    counted up to the next newline, so memory stays near `limit` whatever the line's length.
    """
    chunk = min(_CHUNK, limit + 1)
    while True:
        parts: list[bytes] = []
        size, over = 0, False
        while True:
            piece = f.readline(chunk)
            size += len(piece)
            if not over:
                parts.append(piece)
                over = size - piece.endswith(b"\n") > limit
                if over:
                    parts = []
            # readline returns less than asked only at a newline or at the end of the file
            if piece.endswith(b"\n") or len(piece) < chunk:
                break
        if not size:
            return
        yield (None if over else b"".join(parts)), size


def decode_line(raw: bytes, first: bool) -> tuple[str, tuple[str, str] | None]:
    """Strict UTF-8 text of one line → (text, None), or (best-effort text, (field, problem)).

    A UTF-8 byte-order mark on the first line is accepted and dropped: editors on Windows
    write one, and it carries no data. A NUL byte is never text (a binary or UTF-16 file).
    """
    if first and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        msg = f"not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); save the file as UTF-8"
        return raw.decode("utf-8", errors="replace"), ("encoding", msg)
    nul = text.find("\x00")
    if nul >= 0:
        return text, ("encoding", f"NUL byte at column {nul + 1}: not a text file (binary, or UTF-16?)")
    return text, None


def find_lone_surrogate(obj: Any) -> tuple[str, str] | None:
    """(field path, problem) for the first string or key holding a lone surrogate, else None.

    `"\\ud800"` is valid JSON text but not Unicode: it cannot be written as UTF-8, so the tuning
    service cannot read it (and Python's encoder raises on it). Iterative, so depth is no risk.
    """
    stack: list[tuple[str, Any]] = [("", obj)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            bad = _surrogate(value)
            if bad is not None:
                return where or "example", bad
        elif isinstance(value, dict):
            items = list(value.items())
            for key, item in reversed(items):
                name = f"{where}.{shown_key(key)}" if where else shown_key(key)
                bad = _surrogate(key)
                if bad is not None:
                    return name, f"key: {bad}"
                stack.append((name, item))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", item) for i, item in reversed(list(enumerate(value))))
    return None


def _surrogate(text: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return (f"lone surrogate \\u{ord(text[e.start]):04x} at character {e.start + 1}: not valid Unicode "
                "(half of an escaped emoji?); the tuning service cannot read it")
    return None


_UTF16_32_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")


def wrong_bom(first_line: bytes) -> tuple[str, str] | None:
    """(field, problem) when a file starts with a UTF-16/32 byte-order mark (e.g. Excel's
    "Unicode text"): every line would otherwise be reported as not UTF-8."""
    if first_line.startswith(_UTF16_32_BOMS):
        return "encoding", "UTF-16 or UTF-32 text (byte-order mark); save the file as UTF-8"
    return None


def sniff_jsonl(f: IO[bytes], limit: int = MAX_LINE_BYTES) -> tuple[int, str, str] | None:
    """(line, field, problem) when the file as a whole is not JSON Lines, else None.

    Catches what would otherwise be dozens of misleading per-line problems: UTF-16/32 text,
    a JSON array, or one object pretty-printed over several lines. Reads at most two lines;
    `f` is left at its start.
    """
    try:
        first: tuple[int, str] | None = None
        for n, (raw, _) in enumerate(read_lines(f, limit), 1):
            if n == 1 and raw is not None and wrong_bom(raw):
                return 1, *wrong_bom(raw)  # type: ignore[misc]
            if raw is None:
                return None  # the line readers report it
            text, _problem = decode_line(raw, n == 1)
            if not text.strip():
                continue
            if first is None:
                if text.lstrip().startswith("["):
                    return n, "file", "this is a JSON array; JSON Lines expected (one object per line)"
                if not _ends_early(text):
                    return None
                first = (n, text)
                continue
            return first[0], "file", ("this looks like pretty-printed JSON (an object spread over several "
                                      "lines); JSON Lines expected (one object per line)")
        return None
    finally:
        f.seek(0)


def _ends_early(text: str) -> bool:
    """True when `text` is the start of a JSON value that continues past the end of the line."""
    stripped = text.strip()
    try:
        json.loads(stripped)
    except json.JSONDecodeError as e:
        return e.pos >= len(stripped) and stripped.startswith("{")
    except (ValueError, RecursionError):
        return False
    return False
