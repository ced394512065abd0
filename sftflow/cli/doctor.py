"""`sftflow doctor` and the preflight that `pipeline`, `tune`, `sweep` (and `prepare`'s storage half) run first."""

from __future__ import annotations

import argparse
import sys

from sftflow.cli.config import add_flag, common_flags

#: Commands that check the set-up before they start, and how much of it they need.
PREFLIGHT = {"pipeline": "run", "tune": "run", "sweep": "run", "prepare": "storage"}


def add_parser(sub) -> None:
    p = sub.add_parser("doctor", help="check credentials, project, API, model, region, bucket and roles in seconds",
                       description="Preflight for the chosen backend and settings, with free or read-only calls "
                       "only (the bucket's probe object is removed): which credentials were found and whose, "
                       "Vertex AI reachable and enabled, the base model offered in the region, tuning available "
                       "there, the bucket writable, the roles a run needs. One line per problem with its fix; "
                       "exit 0 when ready, 1 otherwise.")
    add_flag(p, "--source-model", "source_model")
    common_flags(p)


def run(settings) -> int:
    from sftflow.preflight import doctor

    where = f"backend {settings.backend}"
    if settings.backend == "vertex":
        where += f", project {settings.project}, region {settings.region}, model {settings.base_model}"
    print(f"sftflow doctor: {where}, storage {settings.storage_root}")
    report = doctor.run(settings)
    for finding in report.findings:
        print(finding.line())
    for problem in report.problems:
        print(f"problem: {problem.line()}")
    verdict = "ready" if report.ready else f"{len(report.problems)} problem(s)"
    print(f"{verdict} ({report.elapsed_s:.1f} s)", file=sys.stderr)
    return 0 if report.ready else 1


def preflight(cmd: str, args: argparse.Namespace, settings) -> int:
    """Before `cmd` downloads or uploads anything: 0 when the set-up is ready (or needs no check), else 1 after
    one `sftflow: error:` line per problem."""
    from sftflow.preflight import doctor

    scope = PREFLIGHT.get(cmd)
    if scope is None or settings.backend != "vertex" or getattr(args, "dry_run", False):
        return 0
    try:
        doctor.require_ready(settings, scope)
    except doctor.PreflightError as exc:
        for problem in exc.problems:
            print(f"sftflow: error: {problem.line()}", file=sys.stderr)
        print(f"sftflow: {cmd} stopped before it started (`sftflow doctor` checks again)", file=sys.stderr)
        return 1
    return 0
