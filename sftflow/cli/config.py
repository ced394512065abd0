"""The run's configuration on the command line: flags made from Settings' fields (type, choices, help and
default all from the field), `--set NAME=VALUE`, `--recipe FILE`, and the flow `config` they add up to.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

EPILOG = """\
Configuration: each flag sets one field of the run's parameters (sftflow.params.RunParams), `--set NAME=VALUE`
any setting, `--recipe FILE` a YAML file of them (e.g. recipes/codelab.yaml). Any setting can also come from
an environment variable SFTFLOW_<NAME> or a .env file (secrets such as SFTFLOW_VERTEX_ACCESS_TOKEN only from
there). Which wins: {precedence}. See README 'Configuration'.
Backends: 'local' (default, offline) and 'vertex'.
"""


def add_flag(g: argparse._ActionsContainer, flag: str, name: str, **kw: Any) -> None:
    """A flag for Settings' field `name`: its type, choices, help and default come from the field."""
    from typing import Literal, get_args, get_origin

    from sftflow.config import Settings, default_text

    f = Settings.model_fields[name]
    kind = f.annotation
    if get_origin(kind) is not Literal:  # `X | None` → X
        kind = next((a for a in get_args(kind) if a is not type(None)), kind)
    if get_origin(kind) is Literal:
        kw.setdefault("choices", list(get_args(kind)))
        kind = type(get_args(kind)[0])
    if kind is not bool:
        kw.setdefault("type", kind)
    kw.setdefault("help", f"{f.description} {default_text(name)}".replace("%", "%%"))
    g.add_argument(flag, dest=name, **kw)


def common_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("configuration")
    for name in ("backend", "project", "region", "bucket", "local_root", "run_name"):
        add_flag(g, "--" + name.replace("_", "-"), name)
    from sftflow.params import RunParams

    g.add_argument("--recipe", metavar="FILE", help=RunParams.model_fields["recipe"].description)
    g.add_argument(
        "--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
        help="set any other setting, e.g. --set temperature=0.2 (repeatable)",
    )


def data_flags(p: argparse.ArgumentParser) -> None:
    add_flag(p, "--train", "train_uri")
    add_flag(p, "--val", "val_uri")
    add_flag(p, "--test", "test_uri")


def tuning_flags(p: argparse.ArgumentParser) -> None:
    from sftflow.tuning import hyperparameters

    for name in ("source_model", *hyperparameters.names()):
        add_flag(p, "--" + name.replace("_", "-"), name)
    add_flag(p, "--display-name", "tuned_model_display_name")
    add_flag(p, "--poll-interval", "poll_interval")
    add_flag(p, "--timeout", "tuning_timeout")
    add_flag(p, "--max-cost", "max_tuning_cost_usd", metavar="USD")
    approve_flag(p)


def approve_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--approve", dest="approval_mode", action="store_const", const="approved",
                   help="approve an estimate above approve_above_usd (default 5) without asking")


def eval_flags(p: argparse.ArgumentParser) -> None:
    for name in ("samples", "concurrency", "rpm"):
        add_flag(p, "--" + name, name)
    add_flag(p, "--mode", "eval_mode")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Settings given on the command line: flags (each named after its field) and `--set NAME=VALUE`."""
    from sftflow.config import Settings, check_known

    out = {n: v for n, v in vars(args).items() if n in Settings.model_fields and v is not None}
    for item in args.settings:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"sftflow: error: --set expects NAME=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = value
    from sftflow.cli.mistakes import UsageError, did_you_mean

    for key in out:
        if key not in Settings.model_fields:
            raise UsageError(f"--set {key}: unknown setting{did_you_mean(key, Settings.model_fields) or ''}"
                             " (settings: README 'Configuration')")
    check_known(out)
    return out


def run_config(args: argparse.Namespace, given_as: dict[str, str] | None = None) -> tuple[dict[str, Any], Any]:
    """The flow's `config` (run parameters only: flags, --set, --recipe) and the Settings it makes, checked
    before Prefect starts. Secrets and machine settings go to this process's environment instead."""
    from pydantic import ValidationError

    from sftflow.cost.approval import cli_approval_default
    from sftflow.config import format_validation_error, load_settings
    from sftflow.errors import ConfigError
    from sftflow.params import RunParams, settings_values

    given = to_environment(overrides(args))
    try:
        params = RunParams(recipe=args.recipe, **given)
        values = settings_values(params)  # flags and recipe
        # No UI to pause for here: a y/N prompt on a terminal, else a refusal; a default, so a flag (--approve),
        # the recipe or SFTFLOW_APPROVAL_MODE wins over it (sftflow.params.PRECEDENCE).
        if default := cli_approval_default(args.command, sys.stdin, values):
            params, values = RunParams(recipe=args.recipe, **given, **default), {**values, **default}
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, given_as)) from None
    settings = load_settings(given_as=given_as, **values)  # fail fast, before Prefect starts, on a bad setting
    return params.model_dump(mode="json", exclude_none=True), settings


def to_environment(config: dict[str, Any]) -> dict[str, Any]:
    """Move secrets (e.g. `--set vertex_access_token=...`, stored in clear as a flow parameter) and machine
    settings (not run parameters) from `config` into this process's environment, where the in-process
    flow's Settings read them."""
    from sftflow.config import SECRET_SETTINGS
    from sftflow.params import MACHINE_SETTINGS

    for name in (*SECRET_SETTINGS, *MACHINE_SETTINGS):
        value = config.pop(name, None)
        if value is not None:
            os.environ[f"SFTFLOW_{name.upper()}"] = str(value)
    return config
