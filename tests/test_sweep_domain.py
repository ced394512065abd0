"""Sweep domain: grid parsing, leaderboard ranking and `best`, the plot, the champion record and rule."""

from __future__ import annotations

import json
import multiprocessing

import numpy as np
import pytest

from sftflow.selection import champion, leaderboard
from sftflow.evaluation import plots
from sftflow.infra import storage
from sftflow.evaluation.results import ExampleResult
from sftflow.infra.layout import check_name
from sftflow.selection import sweep_report
from sftflow.evaluation.rouge import METRICS
from sftflow.evaluation.stats import compare
from sftflow.selection.grid import GridError, GridPoint, expand_grid


# --------------------------------------------------------------------------- grid


def axes(epochs: str, adapter_size: str, learning_rate_multiplier: str) -> dict[str, str]:
    return {"epochs": epochs, "adapter_size": adapter_size, "learning_rate_multiplier": learning_rate_multiplier}


def test_grid_is_the_product_in_order_without_duplicates():
    grid = expand_grid(axes("1,2", "4, 8,4", "1.0,0.5,1"))
    assert [p.label for p in grid] == ["e1-a4-lr1", "e1-a4-lr0p5", "e1-a8-lr1", "e1-a8-lr0p5",
                                       "e2-a4-lr1", "e2-a4-lr0p5", "e2-a8-lr1", "e2-a8-lr0p5"]
    assert grid[1] == GridPoint(1, 4, 0.5)
    for p in grid + expand_grid(axes("3", "16", "1e-5,2.5")):
        check_name("label", p.label)  # every label is a safe path segment


@pytest.mark.parametrize("epochs, sizes, lrs, message", [
    ("1,x", "4", "1", "--epochs: 'x' is not a whole number"),
    ("0", "4", "1", "--epochs: 0 is out of range"),
    ("1,,2", "4", "1", "--epochs: '1,,2': empty value"),
    ("1", "3", "1", "--adapter-size: 3 is not a Gemini adapter size (allowed: 1, 2, 4, 8, 16)"),
    ("1", "32", "1", "--adapter-size: 32 is not a Gemini adapter size"),
    ("1", "4", "0", "--learning-rate-multiplier: 0 is out of range"),
    ("1", "4", "nan", "--learning-rate-multiplier: nan is out of range"),
    ("1", "4", "fast", "--learning-rate-multiplier: 'fast' is not a number"),
    ("1", "4", "", "--learning-rate-multiplier: '': empty value"),
])
def test_bad_grid_values_are_one_line_errors_naming_the_flag(epochs, sizes, lrs, message):
    with pytest.raises(GridError) as err:
        expand_grid(axes(epochs, sizes, lrs))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_huge_grid_is_refused():
    with pytest.raises(GridError, match="more than 64"):
        expand_grid(axes(",".join(map(str, range(1, 11))), "1,2,4,8,16", "1,2"))


# --------------------------------------------------------------------------- leaderboard


def res(i, score, model):
    return ExampleResult(id=f"e{i}", model=model, prompt_chars=10, reference="r", output="x", finish_reason="STOP",
                         scores={m: float(score) for m in METRICS}, attempts=1)


def evals(effect: float, n: int = 60, seed: int = 0, noise: float = 0.02):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.4, n)
    other = np.clip(base + effect + rng.normal(0, noise, n), 0, 1)
    return [res(i, s, "base") for i, s in enumerate(base)], [res(i, s, "m") for i, s in enumerate(other)]


def entry(label, effect, cost, seed=0):
    base, tuned = evals(effect, seed=seed)
    cmp = compare(base, tuned, n_boot=2000, seed=0)
    return leaderboard.entry_from_comparison(label=label, hyperparameters={"epochs": 1}, job=f"jobs/{label}",
                                             key="k", tuned_model=f"models/{label}", endpoint=f"endpoints/{label}",
                                             cost_usd=cost, comparison=cmp)


def test_best_is_the_highest_significant_rouge_l():
    entries = [entry("small", 0.02, 1.0), entry("big", 0.08, 2.0), entry("flat", 0.0, 0.5)]
    board = leaderboard.build(entries, base={"model": "base", "means": {"rougeL": 0.3}}, run_name="r")
    assert board["best"] == "big"
    assert [e["label"] for e in board["entries"]] == ["big", "small", "flat"]
    assert board["entries"][0]["vs_base"]["rougeL"]["ci_low"] > 0
    assert "highest ROUGE-L" in board["best_reason"]
    json.dumps(board)  # plain JSON: no NaN, no dataclasses


def test_a_higher_mean_without_a_significant_win_is_not_best():
    noisy = entry("noisy", 0.0, 0.1)
    noisy = leaderboard.Entry(**{**noisy.__dict__, "means": {"rougeL": 0.99},
                                 "vs_base": {"rougeL": {"difference": 0.3, "ci_low": -0.01, "ci_high": 0.6}}})
    best, _ = leaderboard.choose_best([noisy, entry("solid", 0.05, 5.0)])
    assert best.label == "solid"


def test_ties_go_to_the_cheaper_configuration():
    a, b = entry("costly", 0.05, 3.0), entry("cheap", 0.05, 1.0)
    assert a.means == b.means
    assert leaderboard.choose_best([a, b])[0].label == "cheap"


def test_no_significant_win_gives_a_null_best_with_the_reason(tmp_path):
    board = leaderboard.build([entry("flat", 0.0, 1.0), entry("worse", -0.05, 1.0)], base={}, run_name="r")
    assert board["best"] is None and board["best_entry"] is None
    assert board["best_reason"].startswith("no configuration beats the base model significantly")
    uri = leaderboard.write(str(tmp_path / "runs" / "r" / "sweep" / "leaderboard.json"), board)
    assert leaderboard.read(uri) == board
    assert [p.name for p in (tmp_path / "runs" / "r" / "sweep").iterdir()] == ["leaderboard.json"]  # no temp left
    assert sweep_report.lines(board)[-1].startswith("best: none (no configuration beats")
    assert leaderboard.build([], base={}, run_name="r")["best_reason"] == "no configuration was evaluated"


def test_entries_round_trip_and_table_and_markdown():
    board = leaderboard.build([entry("big", 0.08, 2.0)], base={"means": {"rougeL": 0.3}}, run_name="r")
    assert leaderboard.entries_of(board)[0].to_dict() == board["entries"][0]
    rows = sweep_report.table_rows(board)
    assert rows[0]["configuration"] == "big" and rows[0]["best"] == "★" and rows[0]["cost"] == "$2"
    md = sweep_report.leaderboard_markdown(board, plot_uri="sweep/leaderboard.png")
    assert "| rank | configuration |" in md and "**Best: big**" in md and "leaderboard.png" in md
    assert "<- best" in sweep_report.lines(board)[0]


def test_leaderboard_plot_is_a_png_with_one_bar_per_entry():
    board = leaderboard.build([entry("big", 0.08, 2.0), entry("flat", 0.0, 1.0)],
                              base={"means": {"rougeL": 0.3}}, run_name="r")
    fig = plots.leaderboard_figure(board)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["big", "flat"]
    assert len(ax.patches) == 2
    assert "best: big" in ax.get_title()
    assert plots.plot_leaderboard(board).startswith(plots.PNG_SIGNATURE)


# --------------------------------------------------------------------------- champion


def mc(effect: float, noise: float = 0.02):
    a, b = evals(effect, noise=noise)
    return compare(a, b, n_boot=2000, seed=0).metrics["rougeL"]


def test_first_candidate_becomes_champion():
    d = champion.decide("e1-a4-lr1", None, None)
    assert d.promote and "no champion yet" in d.reason


def test_promotion_needs_the_lower_bound_above_the_margin():
    champ = {"seq": 1, "model": {"label": "old"}}
    win = mc(0.05)
    assert champion.decide("new", champ, win).promote
    refused = champion.decide("new", champ, win, margin=0.2)
    assert not refused.promote and "not above promotion_margin 20 points" in refused.reason
    same = champion.decide("new", champ, mc(0.0, noise=0.0))
    assert not same.promote and "old stays champion" in same.reason
    assert not champion.decide("new", champ, None).promote


def test_history_keeps_every_decision_and_current_is_the_last_promotion(tmp_path):
    root = str(tmp_path)
    assert champion.record(root) == {"current": None, "history": []}
    first = champion.append(root, event="promoted", model={"label": "a"}, reason="first", against=None)
    champion.append(root, event="kept", model={"label": "b"}, reason="no win", against=first["seq"])
    with pytest.raises(champion.ChampionChanged):
        champion.append(root, event="promoted", model={"label": "c"}, reason="compared with nobody", against=None)
    rec = champion.record(root)
    assert [e["seq"] for e in rec["history"]] == [1, 2] and rec["current"]["model"]["label"] == "a"
    assert "champion: a" in champion.lines(rec)[0]


def _append_kept(args):
    root, i = args
    return champion.append(root, event="kept", model={"label": f"m{i}"}, reason="x", against=None)["seq"]


def test_two_processes_at_once_lose_no_history_entry(tmp_path):
    root = str(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        seqs = pool.map(_append_kept, [(root, i) for i in range(8)])
    assert sorted(seqs) == list(range(1, 9))
    assert sorted(e["model"]["label"] for e in champion.history(root)) == sorted(f"m{i}" for i in range(8))


def _promote(args):
    root, label = args
    try:
        return champion.append(root, event="promoted", model={"label": label}, reason="win", against=1)["seq"]
    except champion.ChampionChanged:
        return None


def test_concurrent_promotions_against_the_same_champion_crown_one(tmp_path):
    root = str(tmp_path)
    champion.append(root, event="promoted", model={"label": "a"}, reason="first", against=None)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        out = pool.map(_promote, [(root, "x"), (root, "y")])
    assert sorted(out, key=lambda v: v is None)[0] == 2 and out.count(None) == 1
    assert len(champion.history(root)) == 2


def test_champion_record_on_cloud_storage(gcs_bucket):
    champion.append(gcs_bucket, event="promoted", model={"label": "a"}, reason="first", against=None)
    assert champion.append(gcs_bucket, event="kept", model={"label": "b"}, reason="no", against=1)["seq"] == 2
    assert storage.exists(f"{gcs_bucket}/champion/history/000002.json")
    assert champion.current(gcs_bucket)["model"]["label"] == "a"


def test_models_to_evaluate_adds_intermediate_checkpoints_only_when_asked():
    from sftflow.selection.grid import models_to_evaluate

    grid = expand_grid(axes("1,2", "4", "1"))
    ckpts = [{"checkpoint_id": "1", "epoch": 1, "step": 7, "endpoint": "ep/c1"},
             {"checkpoint_id": "2", "epoch": 2, "step": 14, "endpoint": "ep/2"}]
    tuned = {"e2-a4-lr1": {"label": "e2-a4-lr1", "endpoint": "ep/2", "checkpoints": ckpts}}  # e1 failed
    plain = models_to_evaluate(grid, tuned, checkpoints=False)
    assert [m["label"] for m in plain] == ["e2-a4-lr1"] and plain[0]["model"] == "ep/2"
    both = models_to_evaluate(grid, tuned, checkpoints=True)
    assert [m["label"] for m in both] == ["e2-a4-lr1", "e2-a4-lr1-ckpt1"]
    assert both[1]["model"] == "ep/c1" and both[1]["checkpoint"] == {"checkpoint_id": "1", "epoch": 1, "step": 7}
    assert both[1]["hyperparameters"]["epoch"] == 1
    odd = models_to_evaluate(grid, {"e2-a4-lr1": {**tuned["e2-a4-lr1"], "checkpoints": [
        {**ckpts[0], "checkpoint_id": "Step/7"}]}}, checkpoints=True)
    assert odd[1]["label"] == "e2-a4-lr1-ckptstep-7"
    check_name("label", odd[1]["label"])
