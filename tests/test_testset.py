"""Test CSV reading and its problems, on real files with multi-line cells."""

from __future__ import annotations

import pytest

from sftflow.data.testset import TestExample, read_test_csv, validate_test_csv
from sftflow.errors import DataError


def write(tmp_path, text: str | bytes, name="test.csv") -> str:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return str(p)


MULTILINE = 'input_text,output_text,extra\n"line one\nline two",short,x\n"third, with comma",ok\u00e9,y\n'


def test_reads_rows_with_multiline_cells_and_physical_lines(tmp_path):
    rows = read_test_csv(write(tmp_path, MULTILINE))
    assert rows == [
        TestExample("0", "line one\nline two", "short", 2),
        TestExample("1", "third, with comma", "ok\u00e9", 4),
    ]


def test_limit_and_id_column_and_bom(tmp_path):
    path = write(tmp_path, "\ufeffid,input_text,output_text\r\na7,in1,out1\r\nb8,in2,out2\r\n")
    assert read_test_csv(path) == [TestExample("a7", "in1", "out1", 2), TestExample("b8", "in2", "out2", 3)]
    assert [r.id for r in read_test_csv(path, limit=1)] == ["a7"]


def test_missing_column(tmp_path):
    path = write(tmp_path, "input_text,summary\na,b\n")
    r = validate_test_csv(path)
    assert [str(p) for p in r.problems] == [f"{path}:1: output_text: missing column (header: input_text, summary)"]
    with pytest.raises(DataError, match="output_text: missing column"):
        read_test_csv(path)


def test_empty_cells_name_the_record_start_line(tmp_path):
    path = write(tmp_path, 'input_text,output_text\n"a\nb\nc",x\n"  ",y\nz,\nshort\n')
    r = validate_test_csv(path)
    assert [str(p) for p in r.problems] == [
        f"{path}:5: input_text: empty cell",
        f"{path}:6: output_text: empty cell",
        f"{path}:7: output_text: missing cell: row has 1 of 2 columns",
    ]
    assert r.examples == 1 and not r.ok


def test_bad_encoding_names_the_line(tmp_path):
    path = write(tmp_path, b"input_text,output_text\na,b\nc\xe9,d\n")
    r = validate_test_csv(path)
    assert [str(p) for p in r.problems] == [f"{path}:3: encoding: not UTF-8 (byte 0xe9 at column 2); save the file as UTF-8"]
    with pytest.raises(DataError):
        read_test_csv(path)


def test_duplicate_ids(tmp_path):
    path = write(tmp_path, "id,input_text,output_text\n1,a,b\n2,c,d\n1,e,f\n")
    r = validate_test_csv(path)
    assert [str(p) for p in r.problems] == [f"{path}:4: id: duplicate id '1' (first at line 2)"]


def test_empty_file(tmp_path):
    path = write(tmp_path, "")
    assert [p.field for p in validate_test_csv(path).problems] == ["file"]


def test_large_cell_is_allowed(tmp_path):
    big = "w " * 200_000  # above csv's default 128 KiB field limit
    path = write(tmp_path, f'input_text,output_text\n"{big}",s\n')
    assert read_test_csv(path)[0].input_text == big


def test_source_name_in_problems(tmp_path):
    path = write(tmp_path, "input_text\na\n")
    r = validate_test_csv(path, source_name="gs://b/test.csv")
    assert [str(p) for p in r.problems] == ["gs://b/test.csv:1: output_text: missing column (header: input_text)"]
