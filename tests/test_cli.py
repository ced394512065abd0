"""The `sftflow` command: help, the linter's exit codes and messages, configuration errors."""

import json
import subprocess
import sys

import pytest

from sftflow.cli.main import main
from sftflow.data.samples import sample_paths


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("pipeline", "prepare", "validate", "evaluate", "tune", "compare", "cleanup"):
        assert cmd in out


def test_subcommand_help_documents_flags(capsys):
    with pytest.raises(SystemExit) as done:
        main(["prepare", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--train", "--val", "--test", "--limit", "--bucket", "--set NAME=VALUE"):
        assert flag in out


def test_validate_clean_samples_exit_0(capsys):
    paths = list(sample_paths().values())
    assert main(["validate", *paths]) == 0
    assert "0 problem(s)" in capsys.readouterr().err


def test_validate_reports_path_line_field(tmp_path, capsys):
    bad = tmp_path / "train.jsonl"
    good = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}, {"role": "model", "parts": [{"text": "yo"}]}]}
    wrong = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}, {"role": "user", "parts": [{"text": ""}]}]}
    bad.write_text(json.dumps(good) + "\n" + json.dumps(wrong) + "\n")
    assert main(["validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}:2: contents[1].parts[0].text:" in out
    assert f"{bad}:1:" not in out


def test_validate_reads_gs_uris_as_prepare_does(gcs_bucket, tmp_path, capsys):
    from sftflow.infra import storage

    good = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}, {"role": "model", "parts": [{"text": "yo"}]}]}
    wrong = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}, {"role": "user", "parts": [{"text": ""}]}]}
    clean = storage.write_text(f"{gcs_bucket}/data/train.jsonl", json.dumps(good) + "\n")
    test_csv = storage.upload_file(sample_paths()["test"], f"{gcs_bucket}/data/sft_test_samples.csv")
    assert main(["validate", clean, test_csv]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "2 file(s) checked, 0 problem(s)\n"

    bad = storage.write_text(f"{gcs_bucket}/data/bad.jsonl", json.dumps(good) + "\n" + json.dumps(wrong) + "\n")
    missing = f"{gcs_bucket}/data/missing.jsonl"
    assert main(["validate", bad, missing]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{bad}:2: contents[1].parts[0].text:") and not any(f"{bad}:1:" in line for line in out)
    assert out[-1] == f"{missing}:0: file: cannot read: no such object"
    assert not any("sftflow-validate-" in line for line in out)  # named by the URI, not the temporary copy


def test_bad_setting_fails_before_any_run(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sftflow.cli.main", "prepare", "--set", "adapter_size=3"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "sftflow: error: invalid configuration: --set adapter_size: Input should be 1, 2, 4, 8 or 16, got '3'"
    ]
    assert not (tmp_path / ".sftflow").exists()
