"""A run's parameters as one typed model: the flows' parameter, a recipe file, the CLI's flags.

`RunParams` is derived from `sftflow.config.Settings`, so each field's type, limits, description and
default are written once, there. Every field defaults to None, meaning "not given here": the value
then comes from the recipe, the environment, or the Settings default, in the order of `PRECEDENCE`
(README 'Configuration'). Descriptions end with the real default, so a form or `--help` shows it.

Machine settings (`MACHINE_SETTINGS`) and secrets are not run parameters: they belong to the process
that runs the flow (its environment or `.env`), and Prefect stores parameters in clear.
"""

from __future__ import annotations

import difflib
import importlib.resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, create_model, model_validator
from pydantic.fields import FieldInfo

from sftflow.config import SECRET_SETTINGS, Settings, default_text
from sftflow.errors import ConfigError, StorageError
from sftflow.tuning import hyperparameters

#: How a setting's value is chosen, first match wins (README 'Configuration' shows this line).
PRECEDENCE = ("explicit parameter (CLI flag or --set, flow or deployment parameter) > recipe (--recipe / "
              "`recipe`) > environment SFTFLOW_<NAME> (or .env) > default")

#: Settings of the machine that runs a flow, never of one run: which Prefect API the CLI uses, how long
#: another process's claim on a tuning intent or lease is trusted, where Prefect keeps results, how long the
#: infrastructure lets a flow live. Set them in the environment.
MACHINE_SETTINGS: tuple[str, ...] = ("prefect_server", "claim_stale_after", "lease_ttl_s", "prefect_result_storage",
                                     "infra_timeout_s")

#: The fields a form lists first (the most often changed), the tuning hyperparameters among them.
_FIRST = ("train_uri", "val_uri", "test_uri", "source_model", *hyperparameters.names(), "tuned_model_display_name",
          "samples", "concurrency", "rpm")
#: The fields of a run, in the order a form lists them.
RUN_FIELDS: tuple[str, ...] = _FIRST + tuple(
    n for n in Settings.model_fields if n not in _FIRST and n not in MACHINE_SETTINGS and n not in SECRET_SETTINGS)


def _optional(name: str) -> tuple[Any, FieldInfo]:
    """Settings' field `name` as a run field: same type and limits, default None, real default in the text."""
    f = Settings.model_fields[name]
    info = FieldInfo.merge_field_infos(f, default=None, title=name, validation_alias=None,
                                       description=f"{f.description} {default_text(name)}")
    return f.annotation | None, info


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    _refused_secrets: tuple[str, ...] = PrivateAttr(default=())

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        """The JSON schema Prefect stores and its UI renders as the run form, laid out by `form_schema`."""
        schema = handler(core_schema)
        form_schema(handler.resolve_ref_schema(schema))
        return schema

    @model_validator(mode="wrap")
    @classmethod
    def _set_secrets_aside(cls, data: Any, handler: Any) -> Any:
        """A secret given as a parameter is kept out of the model (never stored in it) and remembered
        by name, so the flow can refuse it with a clear message and scrub its own stored parameters."""
        refused: tuple[str, ...] = ()
        if isinstance(data, dict):
            refused = tuple(sorted(k for k in SECRET_SETTINGS if data.get(k) is not None))
            data = {k: v for k, v in data.items() if k not in SECRET_SETTINGS}
        model = handler(data)
        if refused:
            model._refused_secrets = refused
        return model


RunParams = create_model(
    "RunParams",
    __base__=_Base,
    __doc__="A run's parameters; None (unset) means: from the recipe, else the environment, else the default.",
    recipe=(str | None, Field(None, title="recipe", description="A YAML recipe file (path or gs:// URI) whose "
                              "keys are these fields, e.g. recipes/codelab.yaml; fields set here win over it.")),
    **{name: _optional(name) for name in RUN_FIELDS},
)


def set_fields(params: BaseModel) -> dict[str, Any]:
    """The fields given (not None), as plain data; `recipe` excluded."""
    return {k: v for k, v in params.model_dump(mode="json", exclude={"recipe"}).items() if v is not None}


#: sftflow's own recipes (`--recipe local-quick`): package data (pyproject.toml), so an installed wheel has them
#: too; a checkout's recipes/*.yaml are links to these.
RECIPES = Path(str(importlib.resources.files("sftflow") / "recipes"))


def _named_recipe(uri: str) -> str:
    """`local-quick` (a bare name that is no file here) → sftflow's recipes/local-quick.yaml."""
    if "/" in uri or Path(uri).exists() or not (RECIPES / f"{uri}.yaml").is_file():
        return uri
    return str(RECIPES / f"{uri}.yaml")


def load_recipe(uri: str) -> dict[str, Any]:
    """The fields a recipe sets, checked against RunParams.

    Raises ConfigError, one line: `FILE[:LINE]: FIELD: problem` for an unknown key or a bad value.
    """
    from sftflow.infra import storage

    uri = _named_recipe(uri)
    try:
        text = storage.read_text(uri)
    except (StorageError, FileNotFoundError) as exc:
        where = ""
        if not storage.is_gcs(uri) and not storage.is_http(uri) and not Path(uri).exists():
            names = ", ".join(p.stem for p in sorted(RECIPES.glob("*.yaml")))
            where = (f" (looked in {Path(uri).expanduser().resolve().parent}"
                     f"{f'; recipes by name: {names}' if names else ''})")
        raise ConfigError(f"recipe: {exc}{where}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{uri}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{uri}: a recipe is a mapping of field: value, got {type(data).__name__}")
    lines = _key_lines(text)
    for key in data:
        if key == "recipe":
            raise ConfigError(f"{uri}:{lines.get(key, '?')}: recipe: a recipe cannot name another recipe")
        if key in SECRET_SETTINGS:
            raise ConfigError(f"{uri}:{lines.get(key, '?')}: {key}: a secret is never kept in a recipe; set "
                              f"SFTFLOW_{key.upper()} in the environment or name a Prefect Secret block in "
                              f"{key}_secret_block")
        if key not in RunParams.model_fields:
            close = difflib.get_close_matches(str(key), list(RunParams.model_fields), n=2, cutoff=0.6)
            hint = (" (a machine setting: set it in the environment)" if key in MACHINE_SETTINGS
                    else f"; did you mean {' or '.join(close)}?" if close else "")
            raise ConfigError(f"{uri}:{lines.get(key, '?')}: {key}: unknown field{hint}")
    try:
        params = RunParams.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else "?"
        raise ConfigError(f"{uri}:{lines.get(key, '?')}: {key}: {err['msg']}, got {err.get('input')!r}") from None
    return set_fields(params)


def _key_lines(text: str) -> dict[str, int]:
    """Line number of each top-level key (for error messages)."""
    node = yaml.compose(text)
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: k.start_mark.line + 1 for k, _ in node.value}


def settings_values(params: BaseModel | dict | None) -> dict[str, Any]:
    """The values a run sets explicitly or through its recipe, explicit ones winning (`PRECEDENCE`);
    what is left out comes from the environment or the defaults when Settings is built."""
    params = params if isinstance(params, BaseModel) else RunParams.model_validate(params or {})
    recipe = load_recipe(params.recipe) if params.recipe else {}
    return {**recipe, **set_fields(params)}


def refuse_secrets(params: BaseModel | dict | None) -> None:
    """Raise ConfigError when someone passed a secret as a run parameter (RunParams' validator set it
    aside, so it is in no model); the message names the two places a secret may come from."""
    if isinstance(params, dict):
        given = tuple(sorted(k for k in SECRET_SETTINGS if params.get(k) is not None))
    else:
        given = getattr(params, "_refused_secrets", ())
    if given:
        name = given[0]
        raise ConfigError(
            f"config: {name} is a secret and is never taken as a flow parameter (Prefect stores parameters "
            f"in clear); set SFTFLOW_{name.upper()} in the environment of the process that runs the flow, "
            f"or store it in a Prefect Secret block and pass the block's name as {name}_secret_block"
        )


def write_recipe(params: BaseModel, path: str | Path) -> None:
    """Write the fields `params` sets as a recipe (the inverse of load_recipe)."""
    Path(path).write_text(yaml.safe_dump(set_fields(params), sort_keys=False), encoding="utf-8")


def kind_of(name: str) -> str:
    """Where a setting may be given: `run` (flag, parameter, recipe, environment), `machine` or `secret`
    (the environment only; a secret also from a Prefect Secret block)."""
    return "secret" if name in SECRET_SETTINGS else "machine" if name in MACHINE_SETTINGS else "run"


def settings_table() -> str:
    """README 'Configuration' table, made from Settings' fields (tests/test_params.py checks README has it)."""
    from sftflow.config import format_default, setting_default

    rows = ["| setting | default | kind | meaning |", "|---|---|---|---|"]
    for name, f in Settings.model_fields.items():
        text = (f.description or "").replace("|", "\\|")
        default = "–" if setting_default(name) is None else f"`{format_default(name)}`"
        rows.append(f"| `{name}` | {default} | {kind_of(name)} | {text} |")
    return "\n".join(rows)


# ----------------------------------------------------------------------------- the run form

#: The run form in the Prefect UI, in the order a person fills it: the groups, and in each the fields
#: people change most first, with a title in words. A field no group names goes last, under "More".
FORM_GROUPS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("Data", (("train_uri", "Training data"), ("val_uri", "Validation data"), ("test_uri", "Test set"),
              ("limit", "Examples kept per file"), ("shuffle_seed", "Shuffle seed"))),
    ("Model", (("source_model", "Base model"), ("epochs", "Epochs"), ("adapter_size", "Adapter size (LoRA rank)"),
               ("learning_rate_multiplier", "Learning-rate multiplier"),
               ("tuned_model_display_name", "Tuned model's display name"), ("seed", "Seed"),
               ("local_train_budget_s", "Local training budget (s)"), ("poll_interval", "Job poll interval (s)"),
               ("tuning_timeout", "Job timeout (s)"), ("cancel_job_on_timeout", "Cancel the job on timeout"),
               ("cancel_job_on_interrupt", "Cancel the job when the run is cancelled"),
               ("resubmit_failed", "Resubmit a failed job"),
               ("wait_mode", "While the job trains: poll or suspend"))),
    ("Evaluation", (("samples", "Test examples"), ("promotion_margin", "Champion promotion margin"),
                    ("promotion_metric", "Champion decided by (ROUGE-L or the judge)"),
                    ("judge", "Pairwise judge"), ("judge_samples", "Judged pairs"), ("judge_model", "Judge model"),
                    ("eval_mode", "Online or batch"), ("temperature", "Temperature"),
                    ("max_output_tokens", "Max output tokens"), ("safety_threshold", "Safety threshold"),
                    ("concurrency", "Concurrent requests"), ("rpm", "Requests per minute"),
                    ("max_attempts", "Tries per request"), ("request_timeout", "Request timeout (s)"),
                    ("max_error_rate", "Max error rate"), ("batch_min_examples", "Batch from (examples)"),
                    ("batch_pending_timeout", "Batch pending timeout (s)"),
                    ("batch_fallback_online", "Batch falls back to online"),
                    ("batch_online_below", "Failed batch rows go online below"),
                    ("batch_poll_interval", "Batch poll interval (s)"))),
    ("Cost", (("max_tuning_cost_usd", "Cost cap (USD)"), ("approve_above_usd", "Approval above (USD)"),
              ("approval_mode", "How approval is asked"), ("approval_timeout_s", "Approval wait (s)"),
              ("price_per_million_training_tokens", "Training price (USD per 1M tokens)"),
              ("generation_prices_usd", "Generation prices (USD per 1M tokens)"),
              ("count_tokens_rpm", "Token counting, requests per minute"))),
    ("Where it runs", (("run_name", "Run name"), ("recipe", "Recipe file"), ("backend", "Backend"),
                       ("project", "Google Cloud project"), ("region", "Region"), ("bucket", "Bucket"),
                       ("local_root", "Local storage root"), ("vertex_base_url", "Vertex AI base URL"),
                       ("vertex_access_token_secret_block", "Access token's Prefect Secret block"))),
)


def form_layout(names: Any) -> list[tuple[str, str, str]]:
    """(field, group, title) for each of `names`, in form order; fields no group names go last, under "More"."""
    placed = [(name, group, title) for group, fields in FORM_GROUPS for name, title in fields if name in names]
    known = {name for name, _, _ in placed}
    return placed + [(name, "More", name.replace("_", " ").capitalize()) for name in names if name not in known]


def form_schema(schema: dict[str, Any]) -> None:
    """Lay out RunParams' JSON schema (in place) as a form: the fields grouped and ordered (`FORM_GROUPS`; the
    UI sorts by `position`), titled "Group › Title", an unset field shown as its own type (the `null` choice
    and the `null` default dropped: the UI then renders a plain input, not a type toggle over "Property is
    type None"), and the description saying what an empty field means. Prefect's server still accepts a
    null for such a field (it allows null on a non-required property without a default)."""
    props = schema.get("properties", {})
    out: dict[str, Any] = {}
    for position, (name, group, title) in enumerate(form_layout(list(props))):
        prop = dict(props[name])
        options = [o for o in prop.pop("anyOf", []) if o.get("type") != "null"]
        if len(options) == 1:
            prop.update(options[0])
        elif options:
            prop["anyOf"] = options
        if prop.get("default", 0) is None:
            del prop["default"]
        unset = "Empty: no recipe." if name == "recipe" else "Empty: the recipe's, else the environment's, else the default."
        prop.update(title=f"{group} › {title}", position=position,
                    description=f"{prop.get('description', '')} {unset} Recipe key: `{name}`.".strip())
        out[name] = prop
    schema["properties"] = out


if __name__ == "__main__":  # python -m sftflow.params: the README table
    print(settings_table())

