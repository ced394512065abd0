"""`sftflow sweep` refuses a bad grid before any work; `sftflow champion` shows the record (no Prefect run)."""

from __future__ import annotations

import pytest

from sftflow.selection import champion
from sftflow.cli.main import main


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "1,two"], "--epochs: 'two' is not a whole number (1..100)"),
    (["--adapter-size", "4,32"], "--adapter-size: 32 is not a Gemini adapter size (allowed: 1, 2, 4, 8, 16)"),
    (["--learning-rate-multiplier", "-1"], "--learning-rate-multiplier: -1 is out of range"),
    (["--max-parallel", "0"], "--max-parallel: 0 must be at least 1"),
])
def test_bad_grid_is_one_line_and_nothing_is_started(flags, message, tmp_path, capsys):
    assert main(["sweep", "--local-root", str(tmp_path / "root"), *flags]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"sftflow: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "root").exists()  # nothing prepared, no Prefect result store


def test_champion_shows_current_and_history(tmp_path, capsys):
    root = tmp_path / "root"
    assert main(["champion", "--local-root", str(root)]) == 0
    assert capsys.readouterr().out == "champion: none yet\nhistory (0 decisions):\n"
    storage_root = str(root.resolve())
    champion.append(storage_root, event="promoted", model={"label": "e1-a8-lr1", "run_name": "s1", "endpoint": "ep/1"},
                    reason="no champion yet: e1-a8-lr1 becomes the first one", against=None)
    champion.append(storage_root, event="kept", model={"label": "e2-a4-lr1", "run_name": "s2", "endpoint": "ep/2"},
                    reason="not above promotion_margin", against=1)
    assert main(["champion", "--local-root", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("champion: e1-a8-lr1 (run s1, endpoint ep/1), since #1 at ")
    assert out[1] == "history (2 decisions):"
    assert " challenger e2-a4-lr1 lost, champion #1 stays — not above promotion_margin" in out[3]
    assert "kept" not in out[3]


def test_every_sweep_flag_reaches_the_flow():
    from sftflow.cli.main import build_parser
    from sftflow.cli.config import overrides

    args = build_parser().parse_args([
        "sweep", "--samples", "7", "--concurrency", "3", "--rpm", "60", "--max-cost", "2", "--timeout", "9",
        "--poll-interval", "5", "--source-model", "gemini-2.5-flash", "--display-name", "d", "--train", "t.jsonl",
        "--val", "v.jsonl", "--test", "x.csv", "--epochs", "1,2"])
    assert args.grid_epochs == "1,2"  # the grid's list, not the `epochs` setting
    assert overrides(args) == {
        "samples": 7, "concurrency": 3, "rpm": 60.0, "max_tuning_cost_usd": 2.0, "tuning_timeout": 9.0,
        "poll_interval": 5.0, "source_model": "gemini-2.5-flash", "tuned_model_display_name": "d",
        "train_uri": "t.jsonl", "val_uri": "v.jsonl", "test_uri": "x.csv"}
