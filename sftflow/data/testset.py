"""The test CSV (`input_text`, `output_text`, optional `id`): reading and checks.

Cells may span lines, so problems are reported at the physical line where the record starts
(what an editor shows), not the record number. Bytes that are not UTF-8 are reported at the
line that holds them.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from sftflow.data.reading import MAX_LINE_BYTES, clip, decode_line, read_lines, shown, shown_key, wrong_bom
from sftflow.data.rules import Problem, ProblemLog, line_too_long

REQUIRED_COLUMNS = ("input_text", "output_text")
ID_COLUMN = "id"
_FIELD_LIMIT = MAX_LINE_BYTES  # a test article may be far above csv's 128 KiB default cell limit


@dataclass(frozen=True)
class TestExample:
    """One test row; `line` is the physical line where its record starts."""

    __test__ = False  # not a pytest test class

    id: str
    input_text: str
    output_text: str
    line: int


@dataclass
class TestSetReport:
    """What checking a test CSV found; `examples` counts the rows without problems."""

    __test__ = False

    path: str
    examples: int = 0
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0


def _decoded_lines(path: str, log: ProblemLog, name: str) -> Iterator[str]:
    """Physical lines as text; a line with bad bytes is reported and decoded with U+FFFD.

    A line over the length cap is reported and read as an empty line, without being held whole.
    """
    opened, path = path, name
    with open(opened, "rb") as f:
        for n, (raw, size) in enumerate(read_lines(f), 1):
            if raw is None:
                log.add(line_too_long(path, n, size))
                yield "\n"
                continue
            if n == 1 and wrong_bom(raw):
                log.add(Problem(path, 1, *wrong_bom(raw)))  # type: ignore[misc]
                return
            text, bad = decode_line(raw, first=n == 1)
            if bad:
                log.add(Problem(path, n, *bad))
            yield text


def _scan(
    path: str, log: ProblemLog, limit: int | None = None, name: str | None = None
) -> Iterator[TestExample]:
    """Yield well-formed rows and log every problem met on the way (naming the file `name`)."""
    if csv.field_size_limit() < _FIELD_LIMIT:
        csv.field_size_limit(_FIELD_LIMIT)
    # strict: a stray or unterminated quote is an error, not a silently merged cell
    reader = csv.reader(_decoded_lines(path, log, name or path), strict=True)
    path = name or path
    try:
        header = next(reader)
    except StopIteration:
        if log.count:  # e.g. UTF-16: already reported, and not empty
            return
        log.add(Problem(path, 0, "file", "empty file: expected a header with input_text,output_text"))
        return
    except csv.Error as e:
        log.add(Problem(path, 1, "csv", _csv_message(e, 1)))
        return
    cols = {name.strip(): i for i, name in reversed(list(enumerate(header)))}
    missing = [c for c in REQUIRED_COLUMNS if c not in cols]
    for c in missing:
        log.add(Problem(path, 1, c, f"missing column (header: {clip(', '.join(map(shown_key, header))) or 'empty'})"))
    if missing:
        return
    seen: dict[str, int] = {}
    index = 0
    start = reader.line_num + 1
    while limit is None or index < limit:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            log.add(Problem(path, start, "csv", _csv_message(e, start)))
            break  # the reader cannot resync after a malformed record
        line, start = start, reader.line_num + 1
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        ok = True
        values = {}
        for c in (*REQUIRED_COLUMNS, *((ID_COLUMN,) if ID_COLUMN in cols else ())):
            i = cols[c]
            if i >= len(row):
                log.add(Problem(path, line, c, f"missing cell: row has {len(row)} of {len(header)} columns"))
                ok = False
            elif not row[i].strip():
                log.add(Problem(path, line, c, "empty cell"))
                ok = False
            else:
                values[c] = row[i]
        ex_id = values.get(ID_COLUMN, str(index)) if ID_COLUMN in cols else str(index)
        index += 1
        if ID_COLUMN in cols and ID_COLUMN in values:
            if ex_id in seen:
                msg = f"duplicate id {shown(ex_id)} (first at line {seen[ex_id]})"
                log.add(Problem(path, line, ID_COLUMN, msg))
                ok = False
            else:
                seen[ex_id] = line
        if ok:
            yield TestExample(ex_id, values["input_text"], values["output_text"], line)


def split_prompt(prompt: str) -> tuple[str, str]:
    """(instruction, article) of a codelab-shaped prompt ('... the following article:\\n\\n<article>');
    a prompt without that shape is both (the judge shows it as context, the run report as the article)."""
    m = re.search(r"article:\s*", prompt, flags=re.IGNORECASE)
    if not m:
        return prompt.strip(), prompt.strip()
    return prompt[:m.end()].strip(), prompt[m.end():].strip()


def _csv_message(e: csv.Error, start: int) -> str:
    if "unexpected end of data" in str(e):
        return f"unterminated quote: the quoted cell of the record starting on line {start} never closes"
    return f"malformed CSV record: {e} (a quote inside a cell is written twice: \"\")"


def read_test_csv(
    path: str | os.PathLike, limit: int | None = None, *, source_name: str | None = None
) -> list[TestExample]:
    """The first `limit` rows (all if None); raises DataError if any row read is bad."""
    path = os.fspath(path)
    log = ProblemLog()
    rows = list(_scan(path, log, limit, source_name))
    log.raise_if_any()
    return rows


def validate_test_csv(path: str | os.PathLike, *, source_name: str | None = None) -> TestSetReport:
    """Every problem in the file, without raising (for `sftflow validate`)."""
    path = os.fspath(path)
    log = ProblemLog()
    n = sum(1 for _ in _scan(path, log, None, source_name))
    return TestSetReport(source_name or path, examples=n, problems=log.problems, problem_count=log.count)
