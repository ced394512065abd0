"""Chat → Gemini tuning conversion on real files."""

from __future__ import annotations

import json

import pytest

from sftflow.data.formats import convert_example, convert_messages_file
from sftflow.data.rules import validate_contents_file
from sftflow.errors import DataError


def chat(user: str, answer: str, system: str | None = None) -> dict:
    msgs = [{"role": "system", "content": system}] if system else []
    return {"messages": msgs + [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def write_lines(path, objs) -> str:
    path.write_text("".join(o if isinstance(o, str) else json.dumps(o) + "\n" for o in objs), encoding="utf-8")
    return str(path)


def read_jsonl(path) -> list[dict]:
    return [json.loads(x) for x in open(path, encoding="utf-8")]


def test_convert_example_maps_roles_and_joins_system_messages():
    src = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": "Use English."},
            {"role": "user", "content": "Summarise: é"},
            {"role": "assistant", "content": "Short."},
            {"role": "user", "content": "More?"},
            {"role": "model", "content": "No."},
        ]
    }
    assert convert_example(src) == {
        "systemInstruction": {"parts": [{"text": "Be brief.\n\nUse English."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "Summarise: é"}]},
            {"role": "model", "parts": [{"text": "Short."}]},
            {"role": "user", "parts": [{"text": "More?"}]},
            {"role": "model", "parts": [{"text": "No."}]},
        ],
    }


def test_convert_example_without_system_has_no_system_instruction():
    assert "systemInstruction" not in convert_example(chat("a", "b"))


def test_convert_example_names_bad_field():
    with pytest.raises(DataError) as e:
        convert_example({"messages": [{"role": "user", "content": ["x"]}]})
    assert str(e.value) == "<example>:0: messages[0].content: must be a string"


def test_file_conversion_output_bytes_and_validity(tmp_path):
    src = write_lines(tmp_path / "in.jsonl", [chat("ünï", "b", "s"), chat("c", "d")])
    dst = tmp_path / "out" / "train.jsonl"
    report = convert_messages_file(src, dst)
    assert (report.examples_in, report.examples_out, report.problems) == (2, 2, [])
    first = dst.read_bytes().split(b"\n")[0]
    assert first == (
        '{"systemInstruction":{"parts":[{"text":"s"}]},"contents":[{"role":"user","parts":[{"text":"ünï"}]},'
        '{"role":"model","parts":[{"text":"b"}]}]}'
    ).encode()
    assert validate_contents_file(dst, "train").ok


def test_contents_lines_pass_through_byte_for_byte(tmp_path):
    already = '{"contents": [{"role": "user", "parts": [{"text": "x"}]}, {"role": "model", "parts": [{"text": "y"}]}]}'
    src = write_lines(tmp_path / "in.jsonl", [already + "\n", chat("a", "b"), "\n"])
    dst = tmp_path / "out.jsonl"
    report = convert_messages_file(src, dst)
    assert report.examples_out == 2  # the blank line is skipped
    assert dst.read_text(encoding="utf-8").splitlines()[0] == already


def test_limit_keeps_first_examples(tmp_path):
    src = write_lines(tmp_path / "in.jsonl", [chat(f"q{i}", f"a{i}") for i in range(10)])
    dst = tmp_path / "out.jsonl"
    report = convert_messages_file(src, dst, limit=3)
    assert report.examples_out == 3
    assert [r["contents"][0]["parts"][0]["text"] for r in read_jsonl(dst)] == ["q0", "q1", "q2"]
    assert convert_messages_file(src, dst, limit=None).examples_out == 10


def test_seeded_shuffle_is_deterministic_and_seed_dependent(tmp_path):
    src = write_lines(tmp_path / "in.jsonl", [chat(f"q{i}", f"a{i}") for i in range(50)])
    a, b, c = (tmp_path / n for n in ("a.jsonl", "b.jsonl", "c.jsonl"))
    convert_messages_file(src, a, limit=20, shuffle_seed=7)
    convert_messages_file(src, b, limit=20, shuffle_seed=7)
    convert_messages_file(src, c, limit=20, shuffle_seed=8)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    firsts = [r["contents"][0]["parts"][0]["text"] for r in read_jsonl(a)]
    assert len(set(firsts)) == 20 and firsts != [f"q{i}" for i in range(20)]
    # All of them, shuffled, is a permutation of the input.
    convert_messages_file(src, a, limit=None, shuffle_seed=7)
    assert sorted(r["contents"][0]["parts"][0]["text"] for r in read_jsonl(a)) == sorted(f"q{i}" for i in range(50))


@pytest.mark.parametrize(
    ("line", "prefix"),
    [
        ("{not json\n", "2: json: invalid JSON"),
        ('{"msgs": []}\n', "2: messages: required field missing"),
        ('{"messages": [{"role": "bot", "content": "x"}]}\n', "2: messages[0].role: unknown role 'bot'"),
        ('{"messages": [{"role": "user", "content": 5}]}\n', "2: messages[0].content: must be a string"),
        ('["a"]\n', "2: example: must be a JSON object"),
        (b'{"messages": [{"role": "user", "content": "\xff"}]}\n', "2: encoding: not UTF-8"),
    ],
)
def test_bad_line_raises_and_leaves_no_output(tmp_path, line, prefix):
    src = tmp_path / "in.jsonl"
    good = (json.dumps(chat("a", "b")) + "\n").encode()
    src.write_bytes(good + (line if isinstance(line, bytes) else line.encode()) + good)
    dst = tmp_path / "out.jsonl"
    with pytest.raises(DataError) as e:
        convert_messages_file(src, dst)
    assert str(e.value).startswith(f"{src}:{prefix}")
    assert len(e.value.problems) == 1
    assert list(tmp_path.iterdir()) == [src]  # neither dst nor a temp file


def test_progress_callback(tmp_path):
    src = write_lines(tmp_path / "in.jsonl", [chat("a", "b")] * 5)
    seen = []
    convert_messages_file(src, tmp_path / "o.jsonl", limit=1000, on_progress=lambda d, t, i: seen.append((d, t)),
                          every=2)
    assert seen == [(2, 1000), (4, 1000), (5, 5)]


def test_shuffled_problem_keeps_its_source_line_number(tmp_path):
    lines = [chat(f"q{i}", f"a{i}") for i in range(6)]
    lines[3] = '{"messages": [{"role": "user"}]}\n'
    src = write_lines(tmp_path / "in.jsonl", lines)
    with pytest.raises(DataError) as e:
        convert_messages_file(src, tmp_path / "o.jsonl", limit=None, shuffle_seed=3)
    assert str(e.value) == f"{src}:4: messages[0].content: required field missing"
    assert not (tmp_path / "o.jsonl").exists()


def test_problems_can_name_the_original_source(tmp_path):
    """A downloaded copy's problems should name the URI the user gave, not the work-area copy."""
    src = write_lines(tmp_path / "copy.jsonl", ['{"messages": 1}\n'])
    with pytest.raises(DataError, match=r"^gs://b/train\.jsonl:1: messages: must be a list"):
        convert_messages_file(src, tmp_path / "o.jsonl", source_name="gs://b/train.jsonl")
    r = validate_contents_file(src, "train", source_name="gs://b/train.jsonl")
    assert r.path == "gs://b/train.jsonl" and all(p.path == r.path for p in r.problems)
