"""`sftflow` command line: one subcommand per flow, plus a fast dataset linter.

Flows are imported only when a subcommand runs one, so `--help` and `validate` answer at once
(no Prefect start-up). User errors end with exit code 1 and a one-line reason (data problems:
one `path:line: field: problem` line each), never a bare traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from sftflow.cli import doctor as cli_doctor, interrupts, sweep as cli_sweep, server as server_cli
from sftflow.cli.mistakes import ArgumentParser, check_inputs, given_names, unrecognized
from sftflow.cli.config import (
    EPILOG,
    add_flag,
    common_flags,
    data_flags,
    eval_flags,
    run_config,
    tuning_flags,
)


def build_parser() -> argparse.ArgumentParser:
    from sftflow.params import PRECEDENCE

    parser = ArgumentParser(
        prog="sftflow",
        description="Supervised fine-tuning pipelines for Gemini on Vertex AI (or offline, locally), "
        "orchestrated by Prefect.",
        epilog=EPILOG.format(precedence=PRECEDENCE),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("pipeline", help="the whole run: prepare, baseline, tune, evaluate tuned, compare, challenge "
                       "the champion, report",
                       description="Run the full pipeline: the tuned model replaces the champion of the storage root "
                       "only on a significant win. Prints the champion decision, then the report's location last.")
    data_flags(p), tuning_flags(p), eval_flags(p)
    add_flag(p, "--promotion-margin", "promotion_margin", metavar="X")
    add_flag(p, "--resubmit-failed", "resubmit_failed", action="store_true", default=None)
    common_flags(p)

    p = sub.add_parser("prepare", help="download, convert, validate and upload the datasets",
                       description="Download train/val/test, convert chat JSONL to Gemini's format, validate "
                       "against Gemini's tuning rules and upload (nothing is uploaded if any file has a problem).")
    data_flags(p)
    add_flag(p, "--limit", "limit")
    add_flag(p, "--shuffle-seed", "shuffle_seed")
    common_flags(p)

    p = sub.add_parser("validate", help="lint dataset files (no Prefect run): chat JSONL, Gemini JSONL, test CSV",
                       description="Detect each file's format and print every problem as "
                       "'path:line: field: problem'. Exit 1 if any.")
    p.add_argument("paths", nargs="+", metavar="PATH")

    p = sub.add_parser("evaluate", help="evaluate one model on the test set with ROUGE-1/2/L",
                       description="Generate answers for the first N test examples and score them. Resumable: "
                       "a rerun after a crash skips examples already scored.")
    p.add_argument("--model", help="base model name or tuned endpoint (default: the base model)")
    p.add_argument("--output", dest="label", help="name of the result set (default: 'base' or 'tuned')")
    add_flag(p, "--test", "test_uri")
    eval_flags(p), common_flags(p)

    p = sub.add_parser("tune", help="launch (or re-attach to) a tuning job and wait for it",
                       description="Submit a supervised tuning job once per intent (dataset content, "
                       "hyperparameters, base model, run name), poll it to the end and record the tuned model. "
                       "A rerun attaches to the existing job instead of paying for a second one.")
    add_flag(p, "--train", "train_uri")
    add_flag(p, "--val", "val_uri")
    add_flag(p, "--resubmit-failed", "resubmit_failed", action="store_true", default=None)
    p.add_argument("--dry-run", action="store_true",
                   help="print the cost estimate and the exact job it would submit; submit nothing")
    tuning_flags(p), common_flags(p)

    p = sub.add_parser("compare", help="paired comparison of two result sets with CIs, plots and a report",
                       description="Compare two evaluation result sets (labels under this run, or "
                       "results.jsonl URIs): only examples both scored are paired.")
    p.add_argument("baseline", help="label (e.g. base) or results.jsonl URI")
    p.add_argument("tuned", help="label (e.g. tuned) or results.jsonl URI")
    p.add_argument("--judge", dest="with_judge", action="store_true",  # dest: `judge` is a setting's name
                   help="also judge each pair with the pairwise judge (setting judge; none: the backend's), both orders")
    common_flags(p)

    p = sub.add_parser("judge", help="pairwise judge of two result sets: win/tie/loss, win rate with CI",
                       description="Judge each pair (baseline answer, candidate answer) on the same test examples "
                       "in both orders with the judge of setting `judge` (vertex: the Gen AI evaluation service's "
                       "pairwise summarization quality autorater; local: embedding similarity, not an LLM).")
    p.add_argument("baseline", help="label (e.g. base) or results.jsonl URI")
    p.add_argument("candidate", help="label (e.g. tuned) or results.jsonl URI")
    common_flags(p)

    p = sub.add_parser("cleanup", help="delete what a run created (lists only, unless --yes)",
                       description="List what the run made — objects under runs/<run>/, its tuning records "
                       "and the tuned models / endpoints they name — and delete them only with --yes. "
                       "Nothing else is touched: other runs, and files under datasets/ that sftflow did not "
                       "name, are listed as 'left' with the reason.")
    p.add_argument("--yes", action="store_true", help="really delete")
    p.add_argument("--include-datasets", action="store_true",
                   help="also delete sftflow's uploaded datasets (<kind>/<kind>-<sha12>.<ext>; shared by runs "
                   "with the same data)")
    p.add_argument("--include-champion", action="store_true",
                   help="also delete the tuned model / endpoint of this run that is the current champion (kept "
                   "otherwise), and record the champion as retired")
    common_flags(p)
    p = sub.add_parser("resume-finished", help="resume the runs suspended while their tuning job trained, once it "
                       "has ended (one pass of the resume_finished deployment)",
                       description="Resume the deployment runs suspended for a tuning job (wait_mode=suspend) whose "
                       "job has ended or whose tuning_timeout ran out, and cancel the job of a run cancelled while suspended; "
                       "print one line per suspended run. Needs the "
                       "Prefect server that holds them (`sftflow server start`, or PREFECT_API_URL).")
    common_flags(p)

    server_cli.add_parser(sub)
    cli_sweep.add_parsers(sub)
    cli_doctor.add_parser(sub)
    return parser


def _prefect_env(local_root: Path) -> None:
    """Keep Prefect's cached results beside our own storage so both vanish together, and send the
    `sftflow.*` loggers' records to the run's logs in the UI too (they reach the terminal either way)."""
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str((local_root / "prefect-results").resolve()))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    extra = [n.strip() for n in os.environ.get("PREFECT_LOGGING_EXTRA_LOGGERS", "").split(",") if n.strip()]
    if "sftflow" not in extra:  # https://docs.prefect.io/v3/advanced/logging-customization
        os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"] = ",".join([*extra, "sftflow"])
    # Outside a run (the command's own checks) there is no run to send a record to: the terminal has it.
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")


def _use_prefect_api(settings: Any, temporary: bool = True) -> bool:
    """Point this process's Prefect at the API to use, before Prefect is imported; True if a server
    (not Prefect's temporary one) will hold the runs. Else, with `temporary`, start Prefect's temporary server."""
    from sftflow.infra.prefect_server import choose_api

    choice = choose_api(settings.local_root, settings.prefect_server)
    if choice.note:
        print(f"sftflow: {choice.note}", file=sys.stderr)
    if choice.source == "local-server":
        os.environ["PREFECT_API_URL"] = choice.api_url
    if choice.api_url is None and temporary:  # Prefect's temporary server, now, in a session of its own (cli_hooks)
        from flows.cli_hooks import start_temporary_server

        start_temporary_server()
    return choice.api_url is not None


def _watched(flow: Any, watch: bool) -> Any:
    from flows.cli_hooks import watched

    return watched(flow, watch)


def _run(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "server":
        return server_cli.run(args)
    if cmd == "validate":
        from sftflow.data.lint import lint_paths

        problems = lint_paths(args.paths)
        for p in problems:
            print(p)
        print(f"{len(args.paths)} file(s) checked, {len(problems)} problem(s)", file=sys.stderr)
        return 1 if problems else 0

    config, settings = run_config(args, given_names(build_parser(), args))
    if cmd == "champion":
        return cli_sweep.run_champion(settings, retire=args.retire)
    if cmd == "sweep":
        cli_sweep.check_args(args)
    if cmd == "doctor":
        return cli_doctor.run(settings)
    if cmd in ("prepare", "tune", "pipeline", "sweep"):
        problems, files = check_inputs(settings, cmd)  # before Prefect starts or anything is written
        if problems:
            for line in problems:
                print(line, file=sys.stderr)
            print(f"sftflow: error: {len(problems)} problem(s) in {', '.join(files)} (the rules of 'sftflow "
                  "validate'); nothing was started", file=sys.stderr)
            return 1
        settings.require_bucket(cmd)
        if cli_doctor.preflight(cmd, args, settings):
            return 1
    if cmd == "evaluate" and args.label is not None:
        from sftflow.infra.layout import check_name

        check_name("--output", args.label)
    _prefect_env(settings.local_root)
    watch = _use_prefect_api(settings, temporary=cmd != "resume-finished")  # before any flow module imports prefect
    undo = _quiet_user_errors()
    try:
        return _run_flow(cmd, args, config, watch)
    finally:
        undo()


def _quiet_user_errors():
    """Prefect logs a failed task's and flow's exception with its traceback on the terminal; for a
    user error the message is the whole story, so show it alone (SFTFLOW_DEBUG=1: everything).
    Prefect's API log handler, hence the UI, keeps the traceback. Returns the undo function."""
    if os.environ.get("SFTFLOW_DEBUG"):
        return lambda: None
    from flows.cli_hooks import setup_logging
    from sftflow.infra.console import hide_user_error_tracebacks

    setup_logging()  # Prefect's console handlers must exist to be adjusted
    return hide_user_error_tracebacks(_is_user_error)


def _run_flow(cmd: str, args: argparse.Namespace, config: dict[str, Any], watch: bool) -> int:

    if cmd == "prepare":
        from flows.prepare_data import prepare_data

        out = _watched(prepare_data, watch)(config=config)
        for kind in ("train", "val", "test"):
            print(f"{kind}: {out[kind]}")
        return 0
    if cmd == "evaluate":
        from flows.evaluate import evaluate

        out = _watched(evaluate, watch)(model=args.model, label=args.label, config=config)
        print(f"results: {out['results_uri']}")
        print(f"plot: {out['plot_uri']}")
        print(f"report: {out['report_uri']}")
        _warn_errors(out)
        return 0
    if cmd == "tune":
        from flows.tune import tune
        from sftflow.tuning.report import dry_run_lines

        if args.dry_run:
            for line in dry_run_lines(_watched(tune, watch)(dry_run=True, config=config)):
                print(line)
            return 0
        out = _watched(tune, watch)(config=config)
        print(f"tuned model: {out['tuned_model']}")
        print(f"endpoint: {out['endpoint']}")
        return 0
    if cmd == "compare":
        from flows.compare import compare

        out = _watched(compare, watch)(baseline=args.baseline, tuned=args.tuned, config=config,
                                       judge=args.with_judge)
        for line in out["verdict"]:
            print(line)
        print(f"comparison: {out['comparison_uri']}")
        for name, uri in out["plots"].items():
            print(f"plot ({name}): {uri}")
        if out.get("judgement"):
            _print_judgement(out["judgement"])
        print(f"report: {out['report_uri']}")
        return 0
    if cmd == "judge":
        from flows.compare import judge_pairs

        out = _watched(judge_pairs, watch)(baseline=args.baseline, candidate=args.candidate, config=config)
        _print_judgement(out)
        print(f"report: {out['report_uri']}")
        return 0
    if cmd == "cleanup":
        from flows.cleanup import cleanup

        out = _watched(cleanup, watch)(yes=args.yes, include_datasets=args.include_datasets,
                                       include_champion=args.include_champion, config=config)
        verb = "deleted" if args.yes else "would delete"
        for item in out["items"]:
            print(f"{verb}: {item}")
        for item in out["skipped"]:
            print(f"left: {item['uri']} ({item['reason']})")
        if out.get("retire"):
            print(f"{'retired' if args.yes else 'would retire'}: {out['retire']}")
        folders = sum(1 for row in out.get("plan", []) if row.get("kind") == "local job folder")
        count = f"{len(out['items'])} item(s)" + (f" ({folders} local job folder(s))" if folders else "")
        if not args.yes:
            print(f"{count}; rerun with --yes to delete them")
        else:
            print(f"{count} deleted, {len(out['skipped'])} left")
        return 0
    if cmd == "pipeline":
        from flows.pipeline import sft_pipeline

        out = _watched(sft_pipeline, watch)(config=config)
        for label, lines in out.get("errors", {}).items():
            _warn_errors({"label": label, "errors": lines})
        for line in out["verdict"]:
            print(line)
        from sftflow.selection.champion_report import decision_lines

        for line in decision_lines(out["champion"]) if out.get("champion") else []:
            print(line)
        print(f"report: {out['report_uri']}")
        return 0
    if cmd == "sweep":
        return cli_sweep.run_sweep(args, config, lambda flow: _watched(flow, watch))
    if cmd == "resume-finished":
        return _resume_finished(watch)
    raise AssertionError(cmd)


def _resume_finished(server: bool) -> int:
    from sftflow.errors import ConfigError

    if not server:  # Prefect's temporary server holds no suspended run
        raise ConfigError("resume-finished: no Prefect server is running here: suspended runs live on the server "
                          "their deployment runs on (start it with `sftflow server start`, or set PREFECT_API_URL)")
    from flows.resume import resume_finished

    out = _watched(resume_finished, True)()
    for row in out["runs"]:
        print(f"{row['run']} ({row['flow']}): {row['outcome']}: {row['reason']}")
    for job in out.get("cancelled_jobs") or []:
        print(f"tuning job {job} cancelled: its run was cancelled while suspended")
    print(f"{len(out['resumed'])} of {out['suspended']} suspended run(s) resumed")
    return 0


def _print_judgement(out: dict) -> None:
    print(out["verdict"])
    print(f"judgements: {out['judgements_uri']}")
    print(f"plot (judge): {out['plot_uri']}")
    _warn_errors({"label": "judge", "errors": out.get("errors")})


def _warn_errors(out: dict) -> None:
    """An evaluation that succeeded with a few errored examples says so (it was not cached)."""
    for line in out.get("errors") or []:
        print(f"sftflow: warning: {out.get('label', 'evaluation')}: {line} (not cached; rerun to ask these again)",
              file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 never crashes a print
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    command = None
    restore = interrupts.take_sigterm()
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        command = getattr(args, "command", None)
        if extra:
            raise unrecognized(parser, command, extra)
        return _run(args)
    except KeyboardInterrupt:
        return interrupts.line_and_code(command)
    except Exception as exc:  # noqa: BLE001 - user-facing boundary: one clear line, no traceback
        if os.environ.get("SFTFLOW_DEBUG"):
            raise
        message = str(exc).strip() or type(exc).__name__
        if not _is_user_error(exc):
            message = f"{type(exc).__name__}: {message} (set SFTFLOW_DEBUG=1 for the traceback)"
        print(f"sftflow: error: {message}", file=sys.stderr)
        return 1
    finally:
        restore()


def _is_user_error(exc: BaseException) -> bool:
    """Errors whose message is the whole story (bad input, config, a failed job): sftflow's own,
    and a missing local file (its message names the path)."""
    from sftflow.errors import SftflowError

    return isinstance(exc, (SftflowError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
