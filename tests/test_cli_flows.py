"""`sftflow evaluate`, `sftflow compare` and `sftflow judge` on the local backend, through the command line's main():
exit codes, the files each writes, and stdout naming them."""

from __future__ import annotations

from pathlib import Path

import pytest

from sftflow.cli.main import main

pytestmark = pytest.mark.slow  # Prefect flows and the MiniLM scorer


def _lines(capsys) -> list[str]:
    return capsys.readouterr().out.splitlines()


def test_evaluate_then_compare_through_the_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(tmp_path / "prefect-results"))  # cli sets it otherwise
    root = tmp_path / "root"
    run = root / "runs" / "default"
    common = ["--local-root", str(root), "--samples", "6"]

    assert main(["evaluate", *common]) == 0
    base = run / "eval" / "base"
    assert _lines(capsys) == [f"results: {base / 'results.jsonl'}", f"plot: {base / 'distribution.png'}",
                              f"report: {base / 'report.md'}"]
    assert main(["evaluate", "--output", "tuned", *common]) == 0  # the same model under a second label
    tuned = run / "eval" / "tuned"
    assert _lines(capsys) == [f"results: {tuned / 'results.jsonl'}", f"plot: {tuned / 'distribution.png'}",
                              f"report: {tuned / 'report.md'}"]
    for d in (base, tuned):
        assert len((d / "results.jsonl").read_text().splitlines()) == 6
        assert (d / "distribution.png").read_bytes().startswith(b"\x89PNG") and (d / "report.md").stat().st_size

    assert main(["compare", "base", "tuned", "--local-root", str(root)]) == 0
    out = _lines(capsys)
    cmp = run / "compare"
    # Identical answers on both sides: every pair ties, so no metric can differ.
    assert out[:3] == [f"no significant difference on {m} (+0.0 points) [CI +0.0, +0.0], p=1.000, n=6"
                       for m in ("ROUGE-1", "ROUGE-2", "ROUGE-L")]
    assert out[3:] == [f"comparison: {cmp / 'comparison.json'}",
                       *(f"plot ({name}): {cmp / (name + '.png')}" for name in ("distributions", "means", "paired")),
                       f"report: {cmp / 'report.md'}"]
    for line in out[3:]:
        assert Path(line.split(": ", 1)[1]).stat().st_size > 0

    # The pairwise judge (local backend: the local judge) on the same pairs: identical answers tie in both orders.
    assert main(["judge", "base", "tuned", "--local-root", str(root)]) == 0
    out, judged = _lines(capsys), run / "judge"
    assert out == ["judge (local judge (embedding similarity, not an LLM)): tuned wins 0/6, ties 6, loses 0; win rate "
                   "50.0% [95% CI 50.0, 50.0]; orders disagreed on 0.0%; agrees with ROUGE-L on 100.0% of pairs",
                   f"judgements: {judged / 'judgements.jsonl'}", f"plot (judge): {judged / 'win_tie_loss.png'}",
                   f"report: {judged / 'report.md'}"]
    assert main(["compare", "base", "tuned", "--judge", "--local-root", str(root)]) == 0
    assert _lines(capsys)[-4:] == [out[0], *out[1:3], f"report: {cmp / 'report.md'}"]


def test_compare_without_results_says_what_to_run(tmp_path, capsys):
    assert main(["compare", "base", "tuned", "--local-root", str(tmp_path / "root")]) == 1
    missing = tmp_path / "root" / "runs" / "default" / "eval" / "base" / "results.jsonl"
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"sftflow: error: {missing}: no results; run `sftflow evaluate` first")


def _first_rows_csv(src: str, dest: Path, n: int) -> Path:
    import csv

    with open(src, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    with open(dest, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows[: n + 1])
    return dest


def test_prepare_then_tune_and_evaluate_tuned_use_what_prepare_made(tmp_path, capsys, monkeypatch, prefect_api_env):
    """The documented sequence: `prepare`, then `tune` with no --train (the prepared data), then `evaluate
    --model tuned` with no --test (the prepared test set), on the local backend."""
    import json

    from tests.smalldata import small_samples

    monkeypatch.setenv("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(tmp_path / "prefect-results"))
    for name, value in prefect_api_env.items():  # the session's server: three flows, no temporary server each
        monkeypatch.setenv(name, value)
    small = small_samples(tmp_path, train=8, val=2)
    test_csv = _first_rows_csv(small["test"], tmp_path / "test3.csv", 3)  # fewer rows than the samples' test set
    root = tmp_path / "root"
    run = root / "runs" / "default"
    common = ["--local-root", str(root)]

    assert main(["prepare", "--train", small["train"], "--val", small["val"], "--test", str(test_csv), *common]) == 0
    prepared = json.loads((run / "prepared.json").read_text())
    assert _lines(capsys) == [f"{kind}: {prepared[kind]}" for kind in ("train", "val", "test")]
    assert len(Path(prepared["train"]).read_text().splitlines()) == 8

    assert main(["tune", *common]) == 0
    tuned = json.loads((run / "tuned.json").read_text())
    assert _lines(capsys) == [f"tuned model: {tuned['tuned_model']}", f"endpoint: {tuned['endpoint']}"]
    records = list((root / "tuning").glob("*.json"))
    assert len(records) == 1
    spec = json.loads(records[0].read_text())["spec"]
    assert prepared["train"] in json.dumps(spec)  # tuned on what prepare uploaded, not the embedded samples

    assert main(["evaluate", "--model", "tuned", "--samples", "6", *common]) == 0
    out = run / "eval" / "tuned"
    assert _lines(capsys) == [f"results: {out / 'results.jsonl'}", f"plot: {out / 'distribution.png'}",
                              f"report: {out / 'report.md'}"]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 3  # the prepared test set's 3 rows, though --samples asked for 6
    assert {r["model"] for r in rows} == {tuned["endpoint"]}
