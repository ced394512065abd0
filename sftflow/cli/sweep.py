"""`sftflow sweep` and `sftflow champion`: their flags and what they print (kept apart from cli.py).

The grid's comma lists are checked here, before Prefect starts, so a typo costs nothing.
"""

from __future__ import annotations

import argparse
from typing import Any

from sftflow.config import format_default
from sftflow.selection.grid import GridError, expand_grid
from sftflow.tuning import hyperparameters


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from sftflow.cli.config import add_flag, approve_flag, common_flags, data_flags, eval_flags

    p = sub.add_parser(
        "sweep", help="tune a hyperparameter grid in parallel, rank it against the base, challenge the champion",
        description="Tune every combination of the comma lists (at most --max-parallel jobs at once), evaluate "
        "each tuned model on the base model's examples, write a leaderboard with paired 95% CIs "
        "(<storage>/runs/<run>/sweep/leaderboard.json) and promote the best to champion only on a significant "
        "ROUGE-L win. A rerun attaches to the grid's jobs instead of paying again. Prints one line per "
        "configuration and 'leaderboard: URI' last.")
    data_flags(p)
    for name in hyperparameters.names():  # one comma list per tuning hyperparameter
        p.add_argument(hyperparameters.flag(name), dest=f"grid_{name}", metavar="V[,V...]",
                       help=f"{hyperparameters.setting_text(name)}: a comma list, one configuration per value "
                       f"(default: the run's {name}, {format_default(name)})".replace("%", "%%"))
    p.add_argument("--max-parallel", type=int, default=2, metavar="N",
                   help="tuning jobs running at once (default 2, the usual concurrent-tuning quota)")
    p.add_argument("--evaluate-checkpoints", action="store_true",
                   help="also evaluate and rank every per-epoch checkpoint of multi-epoch jobs")
    p.add_argument("--no-promote", dest="promote", action="store_false", help="leave the champion alone")
    add_flag(p, "--promotion-margin", "promotion_margin", metavar="X")
    add_flag(p, "--resubmit-failed", "resubmit_failed", action="store_true", default=None)
    add_flag(p, "--source-model", "source_model")
    add_flag(p, "--display-name", "tuned_model_display_name")
    add_flag(p, "--poll-interval", "poll_interval")
    add_flag(p, "--timeout", "tuning_timeout")
    add_flag(p, "--max-cost", "max_tuning_cost_usd", metavar="USD")
    approve_flag(p)
    eval_flags(p)
    common_flags(p)

    p = sub.add_parser("champion", help="show the current champion model and every promotion decision",
                       description="The champion record of this storage root: the current champion and the "
                       "history of decisions (promoted, kept or retired, with the reason). Starts no Prefect run.")
    p.add_argument("--retire", action="store_true",
                   help="record that the current champion no longer serves (e.g. its endpoint was deleted by "
                   "hand): there is none until the next promotion")
    common_flags(p)


def check_args(args: argparse.Namespace) -> None:
    """The grid and --max-parallel, checked before any work (GridError: one line naming the flag)."""
    expand_grid(grid_axes(args))
    if args.max_parallel < 1:
        raise GridError(f"--max-parallel: {args.max_parallel} must be at least 1")


def grid_axes(args: argparse.Namespace) -> dict[str, str]:
    """The comma lists given on the command line, by hyperparameter."""
    return {n: v for n in hyperparameters.names() if (v := getattr(args, f"grid_{n}", None)) is not None}


def run_sweep(args: argparse.Namespace, config: dict[str, Any], watched) -> int:
    from flows.sweep import sweep
    from sftflow.selection import leaderboard
    from sftflow.selection.champion_report import decision_lines
    from sftflow.selection.sweep_report import lines

    out = watched(sweep)(grid=grid_axes(args), max_parallel=args.max_parallel,
                         evaluate_checkpoints=args.evaluate_checkpoints, promote=args.promote, config=config)
    board = leaderboard.read(out["leaderboard_uri"])
    for line in lines(board):
        print(line)
    for label, why in (out.get("failed") or {}).items():
        print(f"{label}: FAILED ({why})")
    for line in decision_lines(out["champion"]) if out.get("champion") else []:
        print(line)
    print(f"plot: {out['plot_uri']}")
    print(f"report: {out['report_uri']}")
    print(f"leaderboard: {out['leaderboard_uri']}")
    return 1 if out.get("failed") and not board["entries"] else 0


def run_champion(settings, retire: bool = False) -> int:
    from sftflow.selection import champion

    current = champion.current(settings.storage_root)
    if retire and current is not None:
        entry = champion.retire(settings.storage_root, current, "retired by hand (sftflow champion --retire)")
        print(f"retired: #{current['seq']} {champion.name_of(current)}" if entry else "the champion changed meanwhile; "
              "nothing retired")
    elif retire:
        print("no champion to retire")
    for line in champion.lines(champion.record(settings.storage_root)):
        print(line)
    return 0


__all__ = ["add_parsers", "check_args", "run_champion", "run_sweep"]
