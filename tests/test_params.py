"""Run parameters (sftflow.params.RunParams): one source for every default, recipes, precedence, secrets."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from sftflow.config import (
    PUBLIC_TEST,
    PUBLIC_TRAIN,
    PUBLIC_VAL,
    SECRET_SETTINGS,
    ConfigError,
    Settings,
    default_text,
    load_settings,
    setting_default,
)
from sftflow.params import (
    MACHINE_SETTINGS,
    PRECEDENCE,
    RUN_FIELDS,
    RunParams,
    load_recipe,
    refuse_secrets,
    settings_table,
    settings_values,
    write_recipe,
)

ROOT = Path(__file__).resolve().parents[1]
CODELAB = ROOT / "recipes" / "codelab.yaml"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for k in list(os.environ):
        if k.startswith("SFTFLOW_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)


# ------------------------------------------------------------------------- one source for each default
def test_readme_configuration_is_the_generated_table():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("<!-- settings-table:")
    block = readme[readme.index("\n", start) + 1:readme.index("<!-- end settings-table -->")].strip()
    assert block == settings_table(), "README's settings table is stale: paste `python -m sftflow.params` over it"
    assert PRECEDENCE in readme


def test_run_fields_are_settings_fields_unset_by_default_and_state_the_real_default():
    assert set(RUN_FIELDS) == set(Settings.model_fields) - set(MACHINE_SETTINGS) - set(SECRET_SETTINGS)
    for name in RUN_FIELDS:
        f = RunParams.model_fields[name]
        assert f.default is None and f.title == name, name
        assert f.description == f"{Settings.model_fields[name].description} {default_text(name)}", name
    assert RunParams.model_fields["epochs"].description.endswith("Default: 1 (SFTFLOW_EPOCHS).")
    assert not set(SECRET_SETTINGS) & set(RunParams.model_fields)


def test_cli_help_comes_from_the_fields(capsys):
    from sftflow.cli.main import main

    with pytest.raises(SystemExit):
        main(["pipeline", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for name in ("samples", "concurrency", "rpm", "poll_interval", "max_tuning_cost_usd", "epochs"):
        assert f"{Settings.model_fields[name].description} {default_text(name)}" in out, name
    assert "--adapter-size {1,2,4,8,16}" in out and "--recipe FILE" in out


def test_other_modules_take_their_defaults_from_settings():
    from sftflow.backends.base import GenerationParams
    from sftflow.backends.local.training import TrainParams

    for f in dataclasses.fields(GenerationParams):
        assert f.default == setting_default(f.metadata.get("setting", f.name)), f.name
    p = TrainParams()
    assert (p.budget_s, p.epochs, p.lora_rank, p.lr_multiplier, p.seed) == tuple(
        setting_default(n) for n in ("local_train_budget_s", "epochs", "adapter_size", "learning_rate_multiplier",
                                     "seed"))


def test_flow_parameter_schema_is_a_form_of_named_fields():
    """What Prefect stores as the flow's (and a deployment's) parameter schema, hence what the UI renders."""
    from flows.pipeline import sft_pipeline
    from flows.tune import tune

    for flow in (sft_pipeline, tune):
        schema = flow.parameters.model_dump()
        config = schema["properties"]["config"]
        props = schema["definitions"][config["$ref"].rsplit("/", 1)[-1]]["properties"]
        assert set(props) == {"recipe", *RUN_FIELDS}
        assert props["epochs"]["title"] == "Model › Epochs"
        assert default_text("epochs") in props["epochs"]["description"]
        assert {"maximum": 100, "minimum": 1, "type": "integer"}.items() <= props["epochs"].items()


def test_the_run_form_is_grouped_titled_and_shows_each_field_as_its_own_type():
    """Data, then model and hyperparameters, evaluation, cost and approval, where it runs; each field titled in
    words; an unset field shown as its type (no null choice, no null default) with what empty means; Prefect's
    server still accepts a null and refuses a wrong type."""
    from prefect.utilities.schema_tools.validation import ValidationError, validate

    from flows.pipeline import sft_pipeline
    from sftflow.params import FORM_GROUPS

    schema = sft_pipeline.parameters.model_dump()
    props = schema["definitions"]["RunParams"]["properties"]
    order = sorted(props, key=lambda n: props[n]["position"])
    assert order == list(props) and order[:3] == ["train_uri", "val_uri", "test_uri"]
    groups = [props[n]["title"].split(" › ")[0] for n in order]
    assert list(dict.fromkeys(groups)) == ["Data", "Model", "Evaluation", "Cost", "Where it runs"], (
        "a run field no FORM_GROUPS entry places lands under 'More': give it a group and a title in sftflow/params.py")
    assert [n for g, fields in FORM_GROUPS for n, _ in fields] == order  # every group entry is a field
    for name, prop in props.items():
        assert "null" not in str(prop.get("anyOf", "")) and "default" not in prop, name
        assert prop["title"] != name and "Empty:" in prop["description"] and f"`{name}`" in prop["description"]
    assert props["adapter_size"]["enum"] == [1, 2, 4, 8, 16] and props["backend"]["enum"] == ["local", "vertex"]
    assert props["shuffle_seed"]["type"] == "integer" and props["recipe"]["type"] == "string"
    validate({"config": {"epochs": None, "adapter_size": 8}}, schema, raise_on_error=True)  # as the server does
    with pytest.raises(ValidationError, match="epochs"):
        validate({"config": {"epochs": "two"}}, schema, raise_on_error=True)


# ------------------------------------------------------------------------- recipes
def test_codelab_recipe_round_trips_and_is_the_codelab(tmp_path, monkeypatch):
    values = load_recipe(str(CODELAB))
    params = RunParams(**values)
    write_recipe(params, tmp_path / "again.yaml")
    assert load_recipe(str(tmp_path / "again.yaml")) == values
    monkeypatch.setenv("SFTFLOW_PROJECT", "p")
    s = load_settings(**settings_values(RunParams(recipe=str(CODELAB), bucket="gs://b")))
    assert (s.backend, s.base_model, s.epochs, s.adapter_size, s.learning_rate_multiplier) == (
        "vertex", "gemini-2.5-flash", 1, 4, 1.0)
    assert s.sources() == {"train": PUBLIC_TRAIN, "val": PUBLIC_VAL, "test": PUBLIC_TEST}
    assert (s.project, s.bucket) == ("p", "gs://b")


@pytest.mark.parametrize("text, message", [
    ("epochs: 2\nepochz: 3\n", r"r\.yaml:2: epochz: unknown field; did you mean epochs\?$"),
    ("epochs: 2\n\nadapter_size: 3\n", r"r\.yaml:3: adapter_size: Input should be 1, 2, 4, 8 or 16, got 3$"),
    ("samples: many\n", r"r\.yaml:1: samples: Input should be a valid integer.*got 'many'$"),
    ("prefect_server: ephemeral\n", r"r\.yaml:1: prefect_server: unknown field \(a machine setting"),
    ("vertex_access_token: abc\n", r"r\.yaml:1: vertex_access_token: a secret is never kept in a recipe"),
    ("epochs: [1\n", r"r\.yaml:2: not valid YAML"),
    ("- epochs\n", r"r\.yaml: a recipe is a mapping"),
])
def test_bad_recipe_is_one_line_naming_file_line_and_field(tmp_path, text, message):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_recipe(str(path))
    assert "\n" not in str(err.value) and "abc" not in str(err.value)


def test_missing_recipe_names_it(tmp_path):
    with pytest.raises(ConfigError, match=r"^recipe: .*nope\.yaml: no such file \(looked in "):
        settings_values(RunParams(recipe=str(tmp_path / "nope.yaml")))


# ------------------------------------------------------------------------- precedence and secrets
def test_explicit_beats_recipe_beats_environment_beats_default(tmp_path, monkeypatch):
    (tmp_path / "r.yaml").write_text("epochs: 3\nsamples: 7\n")
    monkeypatch.setenv("SFTFLOW_EPOCHS", "5")
    monkeypatch.setenv("SFTFLOW_SAMPLES", "9")
    monkeypatch.setenv("SFTFLOW_RPM", "30")
    s = load_settings(**settings_values({"recipe": "r.yaml", "samples": 2}))
    assert (s.samples, s.epochs, s.rpm, s.concurrency) == (2, 3, 30.0, setting_default("concurrency"))


def test_a_secret_parameter_is_set_aside_and_refused():
    params = RunParams(epochs=2, vertex_access_token="very-secret")
    assert "very-secret" not in params.model_dump_json() and "very-secret" not in repr(params)
    with pytest.raises(ConfigError, match="vertex_access_token is a secret.*SFTFLOW_VERTEX_ACCESS_TOKEN"):
        refuse_secrets(params)
    refuse_secrets(RunParams(epochs=2))  # nothing to refuse


def test_cli_flags_win_over_the_recipe_and_machine_settings_go_to_the_environment(tmp_path, monkeypatch):
    from sftflow.cli.main import build_parser
    from sftflow.cli.config import run_config

    monkeypatch.setenv("SFTFLOW_PREFECT_SERVER", "auto")  # restored after the test
    (tmp_path / "r.yaml").write_text("epochs: 3\nsamples: 7\nrun_name: from-recipe\n")
    args = build_parser().parse_args(["pipeline", "--recipe", "r.yaml", "--samples", "4",
                                      "--set", "prefect_server=ephemeral", "--set", "temperature=0.5"])
    config, s = run_config(args)
    assert config.pop("approval_mode") in ("prompt", "refuse")  # the CLI says how approval is asked (no UI)
    assert config == {"recipe": "r.yaml", "samples": 4, "temperature": 0.5}  # the flow's parameter: no machine setting
    assert (s.samples, s.epochs, s.run_name, s.temperature, s.prefect_server) == (4, 3, "from-recipe", 0.5, "ephemeral")
    assert os.environ["SFTFLOW_PREFECT_SERVER"] == "ephemeral"
    with pytest.raises(ConfigError, match=r"adapter_size \(SFTFLOW_ADAPTER_SIZE\): Input should be 1, 2, 4, 8 or 16"):
        run_config(build_parser().parse_args(["pipeline", "--set", "adapter_size=3"]))
    with pytest.raises(ConfigError, match="epochz: unknown setting"):
        run_config(build_parser().parse_args(["pipeline", "--set", "epochz=3"]))
