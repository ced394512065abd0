"""The Google Cloud deployment (prefect.yaml's sft_pipeline/gcp) as each work pool type would submit it.

prefect.yaml's gcp entry is resolved the way `prefect deploy` resolves it (the Prefect variables and the
credentials block that `deployments/setup.py gcp` saves), then prefect-gcp's own job configuration turns
it into a job body exactly as its worker does (`resolve_for_flow_run`: the pool's base job template from
setup.py, the deployment's job variables, `prepare_for_flow_run`; for Vertex AI also the worker's
`_build_job_spec`), with a stand-in Prefect client that serves the flow and nothing else: no request
leaves the process. The credentials are application-default *user* credentials (what `gcloud auth
application-default login` writes, the README's no-key path), from a file made here.

Each body is checked against Google's published API descriptions (google-api-python-client's
run.v2.json and aiplatform.v1.json: tests/servers/discovery_schema.py) and against what a whole run needs:
timeouts that cover tuning_timeout and the work after it, a service account, memory with headroom.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployments import setup
from tests.servers.discovery_schema import load, validate

ROOT = Path(__file__).resolve().parents[1]
PREFECT_YAML = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
ACCOUNT = "sftflow-runner@sft-project.iam.gserviceaccount.com"
WORKER_API_URL = "http://127.0.0.1:4200/api"  # the worker beside `sftflow server start`
JOB_API_URL = "https://prefect.example.org/api"  # what --job-api-url registered
#: Memory floor of the flow's container: a vertex-backend pipeline peaked at 270 MiB; Cloud Run's
#: filesystem (downloads, checkpoints, Prefect's home) is in memory too.
MEMORY_FLOOR_MIB = 1024
#: Memory of the Vertex AI machine types a test may meet (https://cloud.google.com/vertex-ai/docs/training/configure-compute).
MACHINE_MEMORY_MIB = {"n1-standard-4": 15 * 1024, "n1-standard-8": 30 * 1024, "e2-standard-4": 16 * 1024}
PLACEHOLDER = re.compile(r"^\{\{\s*prefect\.(variables|blocks\.gcp-credentials)\.([\w-]+)\s*\}\}$")


# ----------------------------------------------------------------------------------- rendering
def gcp_deployment() -> dict:
    [dep] = [d for d in PREFECT_YAML["deployments"] if d["name"] == "gcp"]
    return dep


def variables(**overrides: str) -> dict[str, str]:
    """What `setup.py gcp --project sft-project --bucket sft-bucket --image ... --service-account ACCOUNT
    --job-api-url JOB_API_URL --region europe-west4` saves."""
    args = setup.build_parser().parse_args([
        "gcp", "--project", "sft-project", "--bucket", "sft-bucket", "--region", "europe-west4",
        "--image", "europe-west4-docker.pkg.dev/sft-project/sftflow/sftflow:0.1.0"])
    return {**setup.gcp_variables(args, ACCOUNT, JOB_API_URL), **overrides}


def as_deployed(value: Any, values: dict[str, str], block: dict) -> Any:
    """`value` with prefect.yaml's placeholders resolved as `prefect deploy` resolves them: a variable to its
    value, the credentials block to its data. Any other placeholder fails the test."""
    if isinstance(value, dict):
        return {k: as_deployed(v, values, block) for k, v in value.items()}
    if isinstance(value, list):
        return [as_deployed(v, values, block) for v in value]
    if isinstance(value, str) and "{{" in value:
        m = PLACEHOLDER.match(value)
        assert m, f"prefect.yaml gcp: placeholder this test cannot resolve: {value}"
        return values[m.group(2)] if m.group(1) == "variables" else block
    return value


@pytest.fixture
def user_adc(tmp_path, monkeypatch) -> dict:
    """Application-default user credentials (a made-up refresh token; nothing is refreshed here), and the
    GcpCredentials block data setup.py saves without a key file."""
    path = tmp_path / "application_default_credentials.json"
    path.write_text(json.dumps({"type": "authorized_user", "client_id": "made-up.apps.googleusercontent.com",
                                "client_secret": "not-a-secret", "refresh_token": "not-a-token",
                                "quota_project_id": "sft-project"}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # google-auth never asks a metadata server
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "sft-project")
    return {"project": "sft-project"}


class _OnlyTheFlow:
    """The Prefect client the job configuration is resolved with: it serves the flow; anything else fails."""

    def __init__(self, flow):
        self.flow = flow

    async def read_flow(self, flow_id):
        assert flow_id == self.flow.id
        return self.flow

    def __getattr__(self, name):
        raise AssertionError(f"rendering the job asked the Prefect API for {name}")


def render(pool_type: str, job_variables: dict, parameters: dict | None = None, worker_api_key: str | None = None):
    """The job configuration prefect-gcp's worker builds for a run of this deployment on a `pool_type` pool
    (`worker_api_key`: the worker's own PREFECT_API_KEY, as with Prefect Cloud)."""
    from prefect.client.schemas.objects import Flow, FlowRun, WorkPool
    from prefect.client.schemas.responses import DeploymentResponse
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect_gcp.workers.cloud_run_v2 import CloudRunWorkerV2
    from prefect_gcp.workers.vertex import VertexAIWorker

    worker = {"cloud-run-v2": CloudRunWorkerV2, "vertex-ai": VertexAIWorker}[pool_type]
    pool = WorkPool(name="sftflow-gcp", type=pool_type, base_job_template=setup._base_job_template(pool_type))
    flow = Flow(id=uuid.uuid4(), name="sft_pipeline")
    dep = DeploymentResponse(id=uuid.uuid4(), name="gcp", flow_id=flow.id, job_variables=job_variables,
                             parameters=parameters or {}, work_pool_name=pool.name)
    run = FlowRun(id=uuid.uuid4(), name="gentle-otter", flow_id=flow.id, deployment_id=dep.id,
                  work_pool_name=pool.name, parameters=parameters or {})
    from prefect.settings import PREFECT_API_KEY, PREFECT_LOGGING_TO_API_ENABLED

    # no API logging: prefect-gcp warns the run's logger about a plain-text key, which would try WORKER_API_URL
    updates = {PREFECT_API_URL: WORKER_API_URL, PREFECT_LOGGING_TO_API_ENABLED: False,
               **({PREFECT_API_KEY: worker_api_key} if worker_api_key else {})}
    with temporary_settings(updates=updates):
        return asyncio.run(worker.job_configuration.resolve_for_flow_run(
            run, client=_OnlyTheFlow(flow), work_pool=pool, worker_name="render", deployment=dep))


def cloud_run_body(config) -> dict:
    """What CloudRunWorkerV2 POSTs to projects.locations.jobs.create (`JobV2.create(body=job_body)`)."""
    return json.loads(json.dumps(config.job_body))


def vertex_body(config) -> dict:
    """The CustomJob VertexAIWorker creates (`_build_job_spec`, then `CustomJob(...)`), in its REST JSON form."""
    from google.cloud.aiplatform_v1.types import CustomJob
    from prefect_gcp.workers.vertex import VertexAIWorker

    worker = VertexAIWorker(work_pool_name="sftflow-gcp")
    job = CustomJob(display_name=config.job_name, job_spec=worker._build_job_spec(config),
                    labels=worker._get_compatible_labels(configuration=config))
    return json.loads(CustomJob.to_json(job, use_integers_for_enums=False))


@pytest.fixture
def deployed(user_adc) -> dict:
    dep = as_deployed(gcp_deployment(), variables(), user_adc)
    return {"parameters": dep["parameters"], "job_variables": dep["work_pool"]["job_variables"]}


def run_needs_s(parameters: dict, monkeypatch) -> float:
    """Seconds a whole run may take in its container: tuning_timeout, then a batch evaluation of the tuned
    model that may queue batch_pending_timeout (the baseline's queue overlaps the tuning), plus an hour for
    preparing, evaluating, comparing and reporting."""
    from sftflow.config import load_settings
    from sftflow.params import settings_values

    monkeypatch.chdir(ROOT)  # the recipe's path is relative to the checkout (the image's /opt/sftflow)
    s = load_settings(**settings_values(parameters["config"]))
    return s.tuning_timeout + s.batch_pending_timeout + 3600


def _mib(quantity: str) -> float:
    m = re.fullmatch(r"(\d+)(Gi|G|Mi|M)", quantity)
    assert m, quantity
    n, unit = int(m.group(1)), m.group(2)
    return n * {"Gi": 1024, "G": 1000**3 / 2**20, "Mi": 1, "M": 1000**2 / 2**20}[unit]


def _seconds(duration: str) -> float:
    assert duration.endswith("s"), duration
    return float(duration[:-1])


# ----------------------------------------------------------------------------------- the bodies
def test_cloud_run_job_body_is_valid_and_fits_a_whole_run(deployed, monkeypatch):
    body = cloud_run_body(render("cloud-run-v2", deployed["job_variables"], deployed["parameters"]))
    assert validate(load("run.v2"), "GoogleCloudRunV2Job", body) == []

    task = body["template"]["template"]
    [container] = task["containers"]
    assert _seconds(task["timeout"]) >= run_needs_s(deployed["parameters"], monkeypatch), task["timeout"]
    assert task["serviceAccount"] == ACCOUNT
    assert _mib(container["resources"]["limits"]["memory"]) >= MEMORY_FLOOR_MIB
    assert container["image"] == variables()["sftflow_image"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PREFECT_API_URL"] == JOB_API_URL, "the job got the worker's loopback API URL"
    assert int(env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"]) >= 30
    assert env["PREFECT__FLOW_RUN_ID"] and container["command"][:3] == ["prefect", "flow-run", "execute"]
    assert float(env["SFTFLOW_INFRA_TIMEOUT_S"]) == _seconds(task["timeout"])  # the run knows its limit


def test_vertex_custom_job_body_is_valid_and_fits_a_whole_run(deployed, monkeypatch):
    config = render("vertex-ai", deployed["job_variables"], deployed["parameters"])
    from google.cloud.aiplatform_v1.types import CustomJobSpec

    # `_build_job_spec` builds the spec with ignore_unknown_fields: a job variable the API lacks would vanish
    # silently. Every key of the rendered spec is a CustomJobSpec field, or one the worker translates.
    translated = {"maximum_run_time_hours": "scheduling.timeout", "service_account_name": "service_account"}
    dropped = set(config.job_spec) - set(translated) - set(CustomJobSpec.meta.fields)
    assert not dropped, f"job variables Vertex AI would never see: {sorted(dropped)}"

    body = vertex_body(config)
    assert validate(load("aiplatform.v1"), "GoogleCloudAiplatformV1CustomJob", body) == []
    spec = body["jobSpec"]
    assert _seconds(spec["scheduling"]["timeout"]) >= run_needs_s(deployed["parameters"], monkeypatch)
    assert spec["serviceAccount"] == ACCOUNT
    [pool] = spec["workerPoolSpecs"]
    assert MACHINE_MEMORY_MIB[pool["machineSpec"]["machineType"]] >= MEMORY_FLOOR_MIB
    env = {e["name"]: e["value"] for e in pool["containerSpec"]["env"]}
    assert env["PREFECT_API_URL"] == JOB_API_URL
    assert float(env["SFTFLOW_INFRA_TIMEOUT_S"]) == _seconds(spec["scheduling"]["timeout"])  # the run knows its limit
    assert int(env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"]) >= 30


@pytest.mark.parametrize("pool_type", setup.WORKER_TYPES)
def test_the_server_would_accept_the_job_variables_on_either_pool_type(deployed, pool_type):
    """What Prefect's server checks at `prefect deploy` (prefect.server.api.validation): the job variables
    against the pool's variables schema. One deployment serves both pool types: a variable only the other
    type has (Cloud Run's `timeout`, Vertex's `maximum_run_time_hours`) is not an error."""
    from prefect.utilities.schema_tools import ValidationError, validate as validate_variables

    schema = setup._base_job_template(pool_type)["variables"]
    check = dict(raise_on_error=True, preprocess=True, ignore_required=True, allow_none_with_default=True)
    validate_variables(deployed["job_variables"], schema, **check)
    with pytest.raises(ValidationError, match="maximum_run_time_hours|timeout"):
        validate_variables({**deployed["job_variables"], "timeout": "12h", "maximum_run_time_hours": "12h"},
                           schema, **check)


def test_without_its_service_account_the_vertex_job_fails_as_reported(user_adc):
    """The issue's failure, reproduced: user credentials name no service account, so the worker refuses."""
    dep = as_deployed(gcp_deployment(), variables(), user_adc)
    job_variables = {k: v for k, v in dep["work_pool"]["job_variables"].items() if k != "service_account_name"}
    with pytest.raises(ValueError, match="A service account is required for the Vertex job"):
        render("vertex-ai", job_variables)


def test_the_validator_finds_a_misspelt_field_a_wrong_type_and_a_bad_enum(deployed):
    """The schema check of a real body is not vacuous: three faults, three lines."""
    body = cloud_run_body(render("cloud-run-v2", deployed["job_variables"]))
    task = body["template"]["template"]
    task["maxRetries"] = str(task["maxRetries"])
    task["containers"][0]["resources"]["limit"] = task["containers"][0]["resources"].pop("limits")
    body["launchStage"] = "STABLE"
    errors = validate(load("run.v2"), "GoogleCloudRunV2Job", body)
    assert sorted(errors) == [
        "launchStage: 'STABLE' is not one of LAUNCH_STAGE_UNSPECIFIED, UNIMPLEMENTED, PRELAUNCH, EARLY_ACCESS, "
        "ALPHA, BETA, GA, DEPRECATED",
        "template.template.containers[0].resources.limit: unknown field (not in GoogleCloudRunV2ResourceRequirements)",
        "template.template.maxRetries: expected an integer, got string '0'",
    ], errors


# ----------------------------------------------------------------------------------- the run's settings
def test_the_gcp_run_leaves_its_tuning_job_to_a_rerun_and_suspends_for_approval(deployed):
    from sftflow.params import RunParams

    config = RunParams.model_validate(deployed["parameters"]["config"])
    assert config.cancel_job_on_interrupt is False  # Cloud Run's SIGTERM at the limit keeps the job: a rerun attaches
    assert config.approval_mode == "suspend"  # no container held (and killed) while a person decides
    assert config.backend is None and config.recipe == "recipes/codelab.yaml"


def test_approval_mode_suspend_outside_a_deployment_run_refuses_saying_why():
    """Only a deployment's own run can be suspended (Prefect reschedules it through its deployment): anywhere
    else `suspend` is a refusal with a reason, before any job (the deployment run itself: test_e2e_deployment)."""
    from flows.approval import _suspended_approval
    from sftflow.cost.approval import ApprovalDenied
    from sftflow.config import Settings

    class Estimate:
        total_usd = 12.5

        def summary(self):
            return "$12.50"

    with pytest.raises(ApprovalDenied) as exc:
        _suspended_approval(Settings(approval_mode="suspend"), Estimate(), key="approve-x")
    assert "approval_mode=suspend needs a deployment's own run" in str(exc.value)
    assert "no job was submitted" in str(exc.value) and "\n" not in str(exc.value)


def test_the_gcp_runs_know_their_time_limit_and_a_whole_run_fits_it(deployed, monkeypatch):
    """The limit the job variables set reaches the run (SFTFLOW_INFRA_TIMEOUT_S → infra_timeout_s), and the
    deployment's own parameters pass the check the pipeline makes at its start; 10 h of tuning_timeout would not."""
    from sftflow.config import load_settings
    from sftflow.errors import ConfigError
    from sftflow.infra.time_limit import check_time_limit
    from sftflow.params import settings_values

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("SFTFLOW_INFRA_TIMEOUT_S", deployed["job_variables"]["env"]["SFTFLOW_INFRA_TIMEOUT_S"])
    s = load_settings(**settings_values(deployed["parameters"]["config"]))
    assert s.infra_timeout_s == deployed["job_variables"]["timeout"] == deployed["job_variables"]["maximum_run_time_hours"] * 3600
    limits = dict(wait_mode=s.wait_mode, batch_pending_timeout=s.batch_pending_timeout)
    check_time_limit("pipeline", s.infra_timeout_s, tuning_timeout=s.tuning_timeout, **limits)
    with pytest.raises(ConfigError, match="after 43200 s"):
        check_time_limit("pipeline", s.infra_timeout_s, tuning_timeout=10 * 3600, **limits)


def test_every_variable_the_gcp_deployment_reads_is_one_setup_saves():
    text = yaml.safe_dump(gcp_deployment())
    used = set(re.findall(r"prefect\.variables\.([\w-]+)", text))
    assert used == set(variables()), (used, set(variables()))
    assert re.findall(r"prefect\.blocks\.([\w.-]+)", text) == [f"gcp-credentials.{setup.GCP_BLOCK}"]


def test_heartbeats_are_on_in_every_work_pool_of_prefect_yaml():
    pools = [PREFECT_YAML["definitions"]["local_pool"], gcp_deployment()["work_pool"]]
    for pool in pools:
        assert int(pool["job_variables"]["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"]) >= 30, pool["name"]


# ----------------------------------------------------------------------------------- Prefect Cloud's key
KEY_SECRET = {"secret": "prefect-api-key", "version": "latest"}


def _made_up_key() -> str:
    return "pnu_" + uuid.uuid4().hex  # shaped like a Prefect Cloud user key; never a real one


def test_the_cloud_run_job_reads_the_prefect_cloud_key_from_secret_manager(user_adc):
    """setup.py gcp --prefect-api-key-secret prefect-api-key: the job's PREFECT_API_KEY comes from that secret
    (Cloud Run resolves it when the container starts), and the worker's own key, which Prefect would otherwise
    copy into the job's environment, appears nowhere in the body."""
    dep = as_deployed(gcp_deployment(), variables(sftflow_prefect_api_key_secret=KEY_SECRET), user_adc)
    key = _made_up_key()
    body = cloud_run_body(render("cloud-run-v2", dep["work_pool"]["job_variables"], dep["parameters"], worker_api_key=key))
    assert validate(load("run.v2"), "GoogleCloudRunV2Job", body) == []
    [container] = body["template"]["template"]["containers"]
    [api_key] = [e for e in container["env"] if e["name"] == "PREFECT_API_KEY"]
    assert api_key == {"name": "PREFECT_API_KEY", "valueSource": {"secretKeyRef": KEY_SECRET}}
    assert key not in json.dumps(body)


def test_without_the_secret_the_worker_would_hand_its_key_over_in_plain_text(user_adc):
    """Why setup.py refuses Prefect Cloud on a Cloud Run pool without --prefect-api-key-secret (below), and what
    README says of Vertex AI, whose custom jobs take environment values in plain text only."""
    dep = as_deployed(gcp_deployment(), variables(), user_adc)  # sftflow_prefect_api_key_secret: null
    assert dep["work_pool"]["job_variables"]["prefect_api_key_secret"] is None
    key = _made_up_key()
    cloud_run = cloud_run_body(render("cloud-run-v2", dep["work_pool"]["job_variables"], worker_api_key=key))
    assert {"name": "PREFECT_API_KEY", "value": key} in cloud_run["template"]["template"]["containers"][0]["env"]
    vertex = vertex_body(render("vertex-ai", dep["work_pool"]["job_variables"], worker_api_key=key))
    assert key in json.dumps(vertex)


def test_no_prefect_key_is_written_into_prefect_yaml():
    text = (ROOT / "prefect.yaml").read_text()
    assert not re.search(r"\bpn[ub]_\w+", text)
    assert all("PREFECT_API_KEY" not in pool.get("job_variables", {}).get("env", {})
               for pool in (PREFECT_YAML["definitions"]["local_pool"], gcp_deployment()["work_pool"]))
    assert gcp_deployment()["work_pool"]["job_variables"]["prefect_api_key_secret"] == \
        "{{ prefect.variables.sftflow_prefect_api_key_secret }}"


def _gcp_args(*extra: str):
    return setup.build_parser().parse_args(["gcp", "--project", "p", "--bucket", "b", "--image", "i", *extra])


def test_setup_gcp_saves_the_secrets_name_and_refuses_a_key_or_a_cloud_api_without_one():
    cloud = "https://api.prefect.cloud/api/accounts/a/workspaces/w"
    assert setup.api_key_secret(_gcp_args("--prefect-api-key-secret", "prefect-api-key"), cloud) == KEY_SECRET
    assert setup.api_key_secret(_gcp_args("--prefect-api-key-secret", "projects/p/secrets/k:3"), cloud) == \
        {"secret": "projects/p/secrets/k", "version": "3"}
    assert setup.api_key_secret(_gcp_args(), JOB_API_URL) is None  # a self-hosted server: no key needed
    assert setup.api_key_secret(_gcp_args("--pool-type", "vertex-ai"), cloud) is None  # README: Vertex takes none
    with pytest.raises(SystemExit, match="needs an API key: pass --prefect-api-key-secret SECRET"):
        setup.api_key_secret(_gcp_args(), cloud)
    key = _made_up_key()
    with pytest.raises(SystemExit, match="the \\*name\\* of a Secret Manager secret") as exc:
        setup.api_key_secret(_gcp_args("--prefect-api-key-secret", key), cloud)
    assert key not in str(exc.value)


# ----------------------------------------------------------------------------------- setup.py gcp
@pytest.mark.parametrize("url", ["http://127.0.0.1:4200/api", "http://localhost:4200/api", "http://[::1]:4200/api",
                                 "http://127.8.9.10/api", "http://0.0.0.0:4200/api"])
def test_setup_gcp_refuses_an_api_url_the_job_cannot_reach(url, capsys):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    argv = ["gcp", "--project", "p", "--bucket", "b", "--image", "i", "--service-account", ACCOUNT]
    with temporary_settings(updates={PREFECT_API_URL: url}), pytest.raises(SystemExit) as exc:
        setup.main(argv)  # refused before the server is asked anything (nothing listens on these ports)
    message = str(exc.value)
    assert "\n" not in message and url in message and "loopback" in message
    assert "the job needs a Prefect API its container can reach" in message and "--job-api-url" in message
    with temporary_settings(updates={PREFECT_API_URL: "https://prefect.example.org/api"}), \
            pytest.raises(SystemExit, match="--job-api-url is http://localhost"):
        setup.main([*argv, "--job-api-url", "http://localhost:4200/api"])


def test_setup_gcp_job_api_url_and_service_account_defaults(tmp_path):
    parse = setup.build_parser().parse_args
    base = ["gcp", "--project", "p", "--bucket", "b", "--image", "i"]
    assert setup.job_api_url(parse(base), "https://api.prefect.cloud/api/accounts/a/workspaces/w").startswith("https")
    assert setup.job_api_url(parse([*base, "--job-api-url", JOB_API_URL]), WORKER_API_URL) == JOB_API_URL
    assert setup.job_service_account(parse([*base, "--service-account", ACCOUNT])) == ACCOUNT
    key = tmp_path / "key.json"
    key.write_text(json.dumps({"type": "service_account", "client_email": "key-account@p.iam.gserviceaccount.com"}))
    assert setup.job_service_account(parse([*base, "--service-account-file", str(key)])) == \
        "key-account@p.iam.gserviceaccount.com"
    with pytest.raises(SystemExit, match="--service-account EMAIL is needed"):
        setup.job_service_account(parse(base))  # application-default user credentials name no account


# ----------------------------------------------------------------------------------- image
def test_the_image_is_built_for_linux_amd64_from_a_small_context():
    dockerfile = (ROOT / "deployments" / "Dockerfile").read_text()
    assert re.search(r"^FROM --platform=linux/amd64 ", dockerfile, re.M)
    assert "docker build --platform linux/amd64 -f deployments/Dockerfile" in (ROOT / "README.md").read_text()
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for excluded in (".venv", ".git", ".sftflow", "tests", ".env", "**/__pycache__"):
        assert excluded in patterns, excluded
    copied = re.findall(r"^COPY (.+?) \S+$", dockerfile, re.M)
    for path in " ".join(copied).split():  # nothing the image needs is left out of the context
        assert path not in patterns and not any(p.strip("/") == path for p in patterns), path


# ----------------------------------------------------------------------------------- the zombie automation
AUTOMATION = ROOT / "deployments" / "zombie-automation.yaml"


def test_the_zombie_automation_is_valid_and_spares_suspended_runs():
    from prefect.events.schemas.automations import AutomationCore

    automation = AutomationCore.model_validate(yaml.safe_load(AUTOMATION.read_text()))
    trigger, [action] = automation.trigger, automation.actions
    assert trigger.posture == "Proactive" and trigger.after == {"prefect.flow-run.heartbeat"}
    # A suspended or paused run sends no heartbeat and is not dead: those states are expected events too.
    for state in ("heartbeat", "Completed", "Failed", "Cancelled", "Crashed", "Suspended", "Paused"):
        assert f"prefect.flow-run.{state}" in trigger.expect, state
    frequency = int(PREFECT_YAML["definitions"]["local_pool"]["job_variables"]["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"])
    assert trigger.within.total_seconds() >= 3 * frequency  # a late beat or two is no crash
    assert action.type == "change-flow-run-state" and action.state == "CRASHED"


@pytest.mark.slow
def test_prefect_automation_create_reads_the_file_into_the_server(prefect_server):
    """What README tells the user to run, against the session's server; read back through the API."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    prefect = str(Path(sys.executable).parent / "prefect")
    proc = subprocess.run([prefect, "automation", "create", "--from-file", str(AUTOMATION)], cwd=ROOT,
                          env=prefect_server.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    created = re.search(r"with id\s+([0-9a-f-]{36})", proc.stdout)
    assert created, proc.stdout
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.url}):
        with get_client(sync_client=True) as client:
            automation = client.read_automation(created.group(1))
            client.delete_automation(automation.id)
    assert automation.name == "sftflow: crash runs whose heartbeats stopped" and automation.enabled
    assert automation.actions[0].state == "CRASHED" and "prefect.flow-run.Suspended" in automation.trigger.expect
    assert automation.trigger.within.total_seconds() == 300


@pytest.mark.slow
def test_the_automation_crashes_a_silent_run_and_spares_a_suspended_one(prefect_server):
    """The shipped trigger on the session's server, its window shortened to Prefect's minimum (10 s) and its
    match to this test's two runs: after a heartbeat, run A says nothing more and is marked Crashed; run B is
    suspended (a Suspended state event) and stays Suspended."""
    import datetime as dt

    import httpx
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import AutomationCore
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Running, Suspended

    @flow(name="zombie-probe")
    def probe():  # never run: only its runs' states and events matter
        pass

    spec = yaml.safe_load(AUTOMATION.read_text())
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.url}):
        with get_client(sync_client=True) as client:
            silent, suspended = (client.create_flow_run(probe, state=Running()) for _ in range(2))
            spec["name"] += f" (test {silent.id})"
            spec["trigger"].update(within=10, match={"prefect.resource.id": [
                f"prefect.flow-run.{silent.id}", f"prefect.flow-run.{suspended.id}"]})
            automation_id = client.create_automation(AutomationCore.model_validate(spec))
            try:
                time.sleep(2)  # the triggers service loads the new automation
                now = dt.datetime.now(dt.timezone.utc).isoformat()
                beats = [{"id": str(uuid.uuid4()), "occurred": now, "event": "prefect.flow-run.heartbeat",
                          "resource": {"prefect.resource.id": f"prefect.flow-run.{run.id}"}}
                         for run in (silent, suspended)]
                httpx.post(f"{prefect_server.url}/events", json=beats, timeout=30).raise_for_status()
                client.set_flow_run_state(suspended.id, Suspended(timeout_seconds=3600), force=True)
                deadline = time.monotonic() + 90
                while (state := client.read_flow_run(silent.id).state).type.value != "CRASHED":
                    assert time.monotonic() < deadline, f"the silent run is still {state.name}"
                    time.sleep(1)
                time.sleep(6)  # one more evaluation of the suspended run's window (5 s granularity)
                kept = client.read_flow_run(suspended.id).state
                fired = httpx.post(f"{prefect_server.url}/events/filter", timeout=30, json={"filter": {
                    "event": {"name": ["prefect.automation.triggered"]},
                    "resource": {"id": [f"prefect.automation.{automation_id}"]}}}).json()["events"]
            finally:
                client.delete_automation(automation_id)
    assert "No heartbeat for 5 minutes" in (state.message or ""), state.message
    # The trigger itself must not fire for the suspended run: on a deployment's run its action would succeed
    # (here, a run without a deployment, Prefect would refuse the change anyway).
    fired_for = [e["payload"]["triggering_labels"]["prefect.resource.id"] for e in fired]
    assert fired_for == [f"prefect.flow-run.{silent.id}"], fired_for
    assert kept.name == "Suspended", kept
