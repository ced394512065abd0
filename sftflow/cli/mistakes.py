"""A new user's mistakes answered at once, before Prefect starts: one line, exit code 1, and a "did you
mean" where a close name exists.

- argument errors (an unknown flag, a bad choice, a missing value): `ArgumentParser` below turns argparse's
  usage-and-exit-2 into `UsageError`, one line naming the flag;
- settings that do not validate: named as the user gave them (`--samples`, `--set NAME`, else SFTFLOW_NAME),
  names explained in words rather than as a regular expression;
- local input files (`--train`, `--val`, `--test`): checked with `sftflow validate`'s rules, every problem as
  `path:line: field: problem`, before anything is written.
"""

from __future__ import annotations

import argparse
import difflib
import os
from collections.abc import Iterable
from typing import Any

from sftflow.errors import ConfigError


class UsageError(ConfigError):
    """A command-line mistake: its message is the whole story (one line)."""


def did_you_mean(given: str, names: Iterable[str]) -> str:
    """`; did you mean X?` when a name is close to `given`, else ''."""
    close = difflib.get_close_matches(given, list(names), n=2, cutoff=0.6)
    if not close:
        return ""
    return f"; did you mean {' or '.join(close)}?"


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a mistake raises UsageError (one line, exit 1) instead of printing the usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{_where(self.prog)}{_with_hint(self, message)} (see '{self.prog} --help')")


def _where(prog: str) -> str:
    """`pipeline: ` for `sftflow pipeline` (the line already starts `sftflow: error:`), '' at the top."""
    command = prog.removeprefix("sftflow").strip()
    return f"{command}: " if command else ""


def _with_hint(parser: argparse.ArgumentParser, message: str) -> str:
    """argparse's message plus a suggestion for an invalid choice (a misspelt command or value)."""
    for action in parser._actions:  # noqa: SLF001 - argparse keeps no public list
        if not action.choices or not message.startswith(f"argument {argparse._get_action_name(action)}:"):
            continue
        given = message.split("invalid choice: ", 1)[-1].split(" (choose from", 1)[0].strip("'")
        if "invalid choice" in message:
            return message + did_you_mean(given, [str(c) for c in action.choices])
    return message


def unrecognized(parser: argparse.ArgumentParser, command: str | None, extra: list[str]) -> UsageError:
    """Unknown arguments after a command: the first unknown flag, with the closest flag of that command."""
    sub = _subparser(parser, command) or parser
    flags = [s for a in sub._actions for s in a.option_strings]  # noqa: SLF001
    first = next((x for x in extra if x.startswith("-")), extra[0])
    name = first.split("=", 1)[0]
    what = "unknown flag" if name.startswith("-") else "unexpected argument"
    rest = f" (also: {' '.join(extra[1:])})" if len(extra) > 1 and not first.startswith("-") else ""
    return UsageError(f"{_where(sub.prog)}{what} {name}{rest}{did_you_mean(name, flags) if name.startswith('-') else ''} "
                      f"(see '{sub.prog} --help')")


def _subparser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser | None:
    for action in parser._actions:  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:  # noqa: SLF001
            return action.choices[command]
    return None


def given_names(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, str]:
    """How the user gave each setting on the command line: `--samples` for a flag, `--set NAME` for --set."""
    sub = _subparser(parser, getattr(args, "command", None)) or parser
    names: dict[str, str] = {}
    for item in getattr(args, "settings", None) or []:
        key = item.partition("=")[0].strip().replace("-", "_")
        names[key] = f"--set {key}"
    for action in sub._actions:  # noqa: SLF001
        if action.option_strings and getattr(args, action.dest, None) is not None:
            long = [s for s in action.option_strings if s.startswith("--")]
            names.setdefault(action.dest, (long or action.option_strings)[0])
    return names


def check_inputs(settings: Any, command: str) -> tuple[list[str], list[str]]:
    """(`path:line: field: problem` for every problem of the run's local input files, checked with
    `sftflow validate`'s rules; the files with problems as `--train PATH`); empty when all are fine or none
    is local (gs://, https:// are read later)."""
    from sftflow.data.lint import lint_path
    from sftflow.infra.storage import is_gcs, is_http

    flags = {"train_uri": ("--train", "train"), "val_uri": ("--val", "val"), "test_uri": ("--test", None)}
    if command == "tune":
        flags.pop("test_uri")
    out: list[str] = []
    bad: list[str] = []
    for field, (flag, kind) in flags.items():
        uri = getattr(settings, field, None)
        if not uri or is_gcs(uri) or is_http(uri):
            continue
        if problems := lint_path(os.fspath(uri), kind=kind):
            out.extend(str(p) for p in problems)
            bad.append(f"{flag} {uri}")
    return out, bad
