"""End to end through Prefect's own machinery: a real `prefect server`, the work pools made by
deployments/setup.py, `prefect deploy --all` from prefect.yaml, a process worker, and flow runs of the
`sft_pipeline/local` deployment on the local backend and on the vertex backend (Vertex-shaped test
server + GCS emulator). The report's numbers are read back through the Prefect API and checked
against the results files; the UI page of the finished run is rendered in headless Chromium.

The server is the session's (tests/servers/prefect_fixtures.py); the worker started here is stopped
here, before the server.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from deployments.local_server import PREFECT, tail
from deployments.local_server import start as start_process, stop as stop_process
from deployments.screenshot import capture, find_chromium, flow_run_url
from sftflow.infra import gcs, storage
from sftflow.data.samples import sample_paths
from tests.servers.gcs_fixtures import emulator_env
from tests.servers.google_tokens import service_account_key_file
from tests.servers.vertex_server import VertexTestServer
from tests.skips import skip_loudly

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = 12  # test examples per evaluation: enough for a paired comparison, small enough to be quick
TOKEN = "e2e-token-not-a-secret"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
JOB_API_URL = "https://prefect.example.org/api"  # what a Cloud Run job would report to (never contacted here)


# ----------------------------------------------------------------------------------- helpers
def _cli(args: list[str], env: dict, timeout: float = 180) -> str:
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _fake_service_account(path: Path) -> Path:
    """A well-formed key file (fresh RSA key, unreachable token URI): lets the GcpCredentials block be saved."""
    service_account_key_file(path, "http://127.0.0.1:9/token", project="e2e-project",
                             email="sftflow@e2e-project.iam.gserviceaccount.com", key_id="0")
    return path


@contextmanager
def api(url: str):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        with get_client(sync_client=True) as client:
            yield client


# ----------------------------------------------------------------------------------- the stack
@pytest.fixture(scope="module")
def stack(tmp_path_factory, gcs_emulator_server, prefect_server):
    """Pools → deploy --all → Vertex-shaped server → worker, on the session's `prefect server`
    (tests/servers/prefect_fixtures.py); yields what the tests need.

    STORAGE_EMULATOR_HOST is set for this module's tests only (they read the runs' files back)."""
    with emulator_env(gcs_emulator_server) as gcs_emulator:
        yield from _stack(tmp_path_factory, gcs_emulator, prefect_server)


def _stack(tmp_path_factory, gcs_emulator, server):
    tmp = tmp_path_factory.mktemp("e2e")
    env = {**os.environ, "PREFECT_HOME": str(tmp / "prefect-home"), "PREFECT_API_URL": server.url,
           "PREFECT_UI_API_URL": server.url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_LOGGING_LEVEL": "INFO", "PREFECT_WORKER_QUERY_SECONDS": "1", "PYTHONUNBUFFERED": "1"}
    vertex = VertexTestServer(job_phases=(0.5, 1.0), gcs_url=gcs_emulator, require_token=TOKEN).start()
    bucket = f"gs://e2e-{uuid.uuid4().hex[:10]}"
    gcs.client().create_bucket(bucket[5:])
    worker = None
    try:
        _cli([sys.executable, "deployments/setup.py", "local"], env)
        key = _fake_service_account(tmp / "sa-key.json")
        _cli([sys.executable, "deployments/setup.py", "gcp", "--project", "e2e-project", "--bucket", "gs://e2e-b",
              "--image", "example.org/sftflow:e2e", "--service-account-file", str(key),
              "--job-api-url", JOB_API_URL], env)  # the server's own URL is loopback: refused for a job
        deploy_out = _cli([PREFECT, "--no-prompt", "deploy", "--all"], env)
        worker_env = {**env, "STORAGE_EMULATOR_HOST": gcs_emulator, "SFTFLOW_VERTEX_BASE_URL": vertex.base_url,
                      "SFTFLOW_VERTEX_ACCESS_TOKEN": TOKEN}
        log = tmp / "worker.log"
        worker = start_process([PREFECT, "worker", "start", "--pool", "sftflow-local"], worker_env, log, cwd=tmp)
        yield {"url": server.url, "ui": server.ui, "tmp": tmp, "vertex": vertex, "bucket": bucket,
               "deploy_out": deploy_out, "worker": worker, "worker_log": log, "key": key}
    finally:
        if worker is not None:
            stop_process(worker)  # the worker goes with this module; the server stays for the session
        vertex.stop()


def _submit(stack, deployment: str, parameters: dict, label: str) -> str:
    """A flow run of `deployment`, its Prefect results kept in this test's tmp dir."""
    results = stack["tmp"] / label / "prefect-results"
    with api(stack["url"]) as client:
        dep = client.read_deployment_by_name(deployment)
        run = client.create_flow_run_from_deployment(
            dep.id, parameters=parameters,
            job_variables={"env": {"PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(results),
                                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}},
        )
    return str(run.id)


def _wait(stack, run_id: str, timeout: float = 420):
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + timeout
    with api(stack["url"]) as client:
        while True:
            run = client.read_flow_run(run_id)
            if run.state and run.state.type.value in TERMINAL:
                break
            if time.monotonic() > deadline or stack["worker"].poll() is not None:
                break
            time.sleep(1)
        if run.state is None or run.state.type.value != "COMPLETED":
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
            text = "\n".join(log.message for log in logs)[-4000:]
            pytest.fail(f"flow run {run.name} ended {run.state and run.state.name!r}:\n{text}\n"
                        f"--- worker log ---\n{tail(stack['worker_log'])}")
    return run


def _artifacts(stack, run_id: str) -> dict[str, object]:
    """Latest artifact per key, of the run and its subflow runs."""
    from prefect.client.schemas.filters import (
        ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterParentFlowRunId,
    )

    with api(stack["url"]) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id])))
        ids = [uuid.UUID(run_id), *(c.id for c in children)]
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids)))
    out = {}
    for a in sorted(arts, key=lambda a: a.created):
        if a.key:
            out[a.key] = a
    return out


def _table(artifact) -> list[dict]:
    data = artifact.data
    return json.loads(data) if isinstance(data, str) else data


def _report_rows(markdown: str) -> dict[str, list[str]]:
    """The report's comparison table: {'ROUGE-1': [base, tuned, difference, ci, w/t/l, p], ...}."""
    rows = {}
    for line in markdown.splitlines():
        m = re.match(r"^\|\s*(ROUGE-(?:1|2|L))\s*\|(.*)\|\s*$", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in m.group(2).split("|")]
    return rows


def _check_report_matches_files(arts: dict, report: dict, comparison: dict) -> None:
    """The numbers the UI shows (artifacts) are the numbers in report.json / comparison.json."""
    assert report["comparison"] == comparison
    names = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L"}
    rows = _report_rows(arts["sft-pipeline-report"].data)
    assert set(rows) == set(names.values()), arts["sft-pipeline-report"].data[:2000]
    table = {r["metric"]: r for r in _table(arts["comparison-metrics"])}
    for metric, label in names.items():
        mc = comparison["metrics"][metric]
        base, tuned, diff, ci, wtl, _p = rows[label]
        assert float(base) == pytest.approx(100 * mc["baseline_mean"], abs=0.006), (label, base)
        assert float(tuned) == pytest.approx(100 * mc["tuned_mean"], abs=0.006), (label, tuned)
        assert float(diff) == pytest.approx(100 * mc["difference"], abs=0.006), (label, diff)
        lo, hi = (float(x) for x in ci.strip("[]").split(","))
        assert (lo, hi) == (pytest.approx(100 * mc["ci_low"], abs=0.006), pytest.approx(100 * mc["ci_high"], abs=0.006))
        assert wtl == f"{mc['wins']}/{mc['ties']}/{mc['losses']}"
        row = table[label]
        assert row["base"] == pytest.approx(100 * mc["baseline_mean"], abs=0.006)
        assert row["tuned"] == pytest.approx(100 * mc["tuned_mean"], abs=0.006)
        assert row["n_paired"] == mc["n_paired"] == comparison["n_paired"]
    assert f"Paired examples: {comparison['n_paired']}" in arts["sft-pipeline-report"].data
    for label in ("base", "tuned"):
        summary = report["evaluations"][label]["summary"]
        eval_rows = {r["metric"]: r for r in _table(arts[f"eval-{label}-metrics"])}
        for metric, vals in summary.items():
            for k, v in vals.items():
                if isinstance(v, (int, float)) and isinstance(eval_rows[metric].get(k), (int, float)):
                    shown = 100 * v if k in ("mean", "median", "std") else v  # ROUGE points, as the reports show
                    assert eval_rows[metric][k] == pytest.approx(shown, abs=0.006), (label, metric, k)


def _pipeline_params(root: Path, **config) -> dict:
    return {"config": {"samples": SAMPLES, "local_root": str(root), "run_name": "e2e", **config}}


@pytest.fixture(scope="module")
def runs(stack):
    """Both pipeline runs submitted at once (the worker runs them side by side): local and vertex."""
    sp = sample_paths()
    local_root = stack["tmp"] / "local" / "root"
    vertex_root = stack["tmp"] / "vertex" / "root"
    vertex_cfg = dict(backend="vertex", project=stack["vertex"].project, region=stack["vertex"].location,
                      bucket=stack["bucket"], poll_interval=1, limit=100, train_uri=sp["train"], val_uri=sp["val"],
                      test_uri=sp["test"], count_tokens_rpm=60_000)
    vertex_params = _pipeline_params(vertex_root, **vertex_cfg)
    # 40 examples a file (the sentence encoding before training grows with them); a 1 s poll, not 60 s
    local_params = _pipeline_params(local_root, local_train_budget_s=20, limit=40, poll_interval=1)
    return {
        "local": (_submit(stack, "sft_pipeline/local", local_params, "local"), local_root),
        "vertex": (_submit(stack, "sft_pipeline/local", vertex_params, "vertex"), vertex_params),
    }


# ----------------------------------------------------------------------------------- tests
def test_deploy_all_from_this_checkout(stack):
    """Every deployment is on its pool; the pull step names the checkout deployed from; the gcp
    variant's values come from setup.py's variables and block, with no key content in it."""
    with api(stack["url"]) as client:
        for flow in ("sft_pipeline", "prepare_data", "evaluate", "tune", "compare", "cleanup", "sweep"):
            dep = client.read_deployment_by_name(f"{flow}/local")
            assert dep.work_pool_name == "sftflow-local"
            [step] = dep.pull_steps
            directory = step["prefect.deployments.steps.set_working_directory"]["directory"]
            assert Path(directory).resolve() == ROOT  # the checkout `prefect deploy` ran in, not a template
            assert Path(dep.job_variables["working_dir"]).resolve() == ROOT
        gcp = client.read_deployment_by_name("sft_pipeline/gcp")
        pools = {p.name: p.type for p in client.read_work_pools()}
    assert pools == {"sftflow-local": "process", "sftflow-gcp": "cloud-run-v2"}
    assert gcp.work_pool_name == "sftflow-gcp"
    assert gcp.parameters["config"] == {"recipe": "recipes/codelab.yaml", "project": "e2e-project",
                                        "region": "us-central1", "bucket": "gs://e2e-b", "run_name": "default",
                                        "cancel_job_on_interrupt": False, "approval_mode": "suspend"}
    assert gcp.job_variables["image"] == "example.org/sftflow:e2e"
    assert gcp.job_variables["service_account_name"] == "sftflow@e2e-project.iam.gserviceaccount.com"  # the key's
    assert gcp.job_variables["env"]["PREFECT_API_URL"] == JOB_API_URL
    assert (gcp.job_variables["timeout"], gcp.job_variables["memory"]) == (43200, "2Gi")
    assert gcp.job_variables["env"]["SFTFLOW_INFRA_TIMEOUT_S"] == "43200"  # the limit, told to the run
    assert gcp.job_variables["prefect_api_key_secret"] is None  # no --prefect-api-key-secret: the variable is null
    assert gcp.job_variables["credentials"]["service_account_file"] == str(stack["key"])
    assert "PRIVATE KEY" not in json.dumps(gcp.model_dump(mode="json"))


def test_pipeline_deployment_local_backend(stack, runs):
    run_id, root = runs["local"]
    run = _wait(stack, run_id)
    arts = _artifacts(stack, run_id)
    for key in ("prepared-data", "prepare-data-summary", "eval-base-metrics", "eval-tuned-metrics",
                "comparison-metrics", "sft-pipeline-report"):
        assert key in arts, (key, sorted(arts))
    run_root = root / "runs" / "e2e"
    report = json.loads((run_root / "report.json").read_text())
    comparison = json.loads((run_root / "compare" / "comparison.json").read_text())
    assert report["backend"] == "local" and comparison["n_paired"] == SAMPLES
    _check_report_matches_files(arts, report, comparison)
    stack["local_run"] = run


def test_pipeline_deployment_vertex_backend_and_cached_rerun(stack, runs):
    run_id, params = runs["vertex"]
    vertex = stack["vertex"]
    _wait(stack, run_id)
    arts = _artifacts(stack, run_id)
    run_root = f"{stack['bucket']}/runs/e2e"
    report = json.loads(storage.read_text(f"{run_root}/report.json"))
    comparison = json.loads(storage.read_text(f"{run_root}/compare/comparison.json"))
    assert report["backend"] == "vertex" and report["job"]["name"].startswith("projects/")
    _check_report_matches_files(arts, report, comparison)
    generated, submitted = vertex.count("POST", ":generateContent"), vertex.count("POST", "/tuningJobs")
    # The baseline's and the tuned model's SAMPLES examples, each asked once (no faults, so no retry; the first
    # champion is not evaluated): one more is a duplicate request, one fewer an example never asked.
    assert (generated, submitted) == (2 * SAMPLES, 1)

    rerun = _submit(stack, "sft_pipeline/local", params, "vertex")  # same inputs, same Prefect result store
    _wait(stack, rerun)
    assert vertex.count("POST", ":generateContent") == generated, "a cached rerun called the model"
    assert vertex.count("POST", "/tuningJobs") == submitted, "a cached rerun submitted a tuning job"
    assert json.loads(storage.read_text(f"{run_root}/report.json"))["comparison"] == comparison


def test_ui_renders_the_finished_run(stack, runs, tmp_path):
    if find_chromium() is None:  # fails in CI (.ci/run installs chromium)
        skip_loudly("the Prefect UI page of a finished run (chromium is not installed)",
                    "apt-get install -y chromium, then rerun tests/test_e2e_deployment.py")
    run = stack.get("local_run") or _wait(stack, runs["local"][0])
    png = tmp_path / "run.png"
    dom = capture(flow_run_url(stack["ui"], str(run.id)), png)
    assert run.name in dom, dom[-2000:]
    assert "Completed" in dom and "sft_pipeline" in dom
    assert png.stat().st_size > 10_000
    if os.environ.get("SFTFLOW_UPDATE_SCREENSHOT"):
        (ROOT / "docs").mkdir(exist_ok=True)
        (ROOT / "docs" / "ui-pipeline-run.png").write_bytes(png.read_bytes())


def _run_form_schema(stack, deployment: str) -> dict:
    """The RunParams schema behind a deployment's run form, as the server holds it."""
    with api(stack["url"]) as client:
        schema = client.read_deployment_by_name(deployment).parameter_openapi_schema
    ref = schema["properties"]["config"]["$ref"].rsplit("/", 1)[-1]
    return schema["definitions"][ref]


def test_deployment_parameters_are_named_fields_with_descriptions_and_defaults(stack):
    """The server holds `config` as a typed object (what the UI renders as a form), not a JSON blob."""
    from sftflow.config import default_text

    run_params = _run_form_schema(stack, "sft_pipeline/local")
    props = run_params["properties"]
    assert run_params["additionalProperties"] is False
    for name in ("epochs", "adapter_size", "learning_rate_multiplier", "samples", "train_uri", "recipe"):
        assert props[name]["title"] and f"`{name}`" in props[name]["description"], name  # titled in words
    assert props["epochs"]["title"] == "Model › Epochs"
    assert default_text("epochs") in props["epochs"]["description"]  # "... Default: 1 (SFTFLOW_EPOCHS). ..."
    assert {"enum": [1, 2, 4, 8, 16], "type": "integer"}.items() <= props["adapter_size"].items()
    assert min(props, key=lambda n: props[n]["position"]) == "train_uri"  # the form starts with the data
    assert "vertex_access_token" not in props and "vertex_access_token_secret_block" in props


def test_ui_run_form_shows_named_fields(stack, tmp_path):
    """The deployment's "Custom run" page renders one input per field (`epochs`, ...), not a JSON editor."""
    if find_chromium() is None:  # fails in CI (.ci/run installs chromium)
        skip_loudly("the Prefect UI run form of a deployment (chromium is not installed)",
                    "apt-get install -y chromium, then rerun tests/test_e2e_deployment.py")
    with api(stack["url"]) as client:
        dep = client.read_deployment_by_name("sft_pipeline/local")
    dom = capture(f"{stack['ui'].rstrip('/')}/deployments/deployment/{dep.id}/run", tmp_path / "form.png")
    for label in ("Model › Epochs", "Model › Adapter size (LoRA rank)", "Model › Learning-rate multiplier",
                  "Evaluation › Test examples", "Where it runs › Recipe file", "Data › Training data"):
        assert re.search(rf">\s*{re.escape(label)}(\s*\(Optional\))?\s*<", dom), (label, dom[-3000:])  # a label
    assert "Tuning epochs. Default: 1 (SFTFLOW_EPOCHS)." in dom  # its description, with the real default
    assert 'Property is type "None"' not in dom  # no null choice under each field
    assert dom.index("Data › Training data") < dom.index("Model › Epochs") < dom.index("Evaluation › Test examples")
    assert "vertex_access_token`" not in dom  # a secret is no field
    if os.environ.get("SFTFLOW_UPDATE_SCREENSHOT"):
        (ROOT / "docs" / "ui-run-form.png").write_bytes((tmp_path / "form.png").read_bytes())


def test_cancelling_the_flow_run_cancels_the_tuning_job(stack):
    """Prefect cancellation (the worker sends the flow process SIGTERM) cancels the cloud job."""
    from prefect.states import Cancelling

    vertex = stack["vertex"]
    train = f"{stack['bucket']}/cancel/train.jsonl"
    storage.write_bytes(train, b'{"contents":[{"role":"user","parts":[{"text":"a"}]},'
                               b'{"role":"model","parts":[{"text":"b"}]}]}\n')
    old_phases, vertex.job_phases = vertex.job_phases, (0.5, 600.0)  # a job that would run for 10 minutes
    cancels = vertex.count("POST", ":cancel")
    try:
        params = {"config": {
            "train_uri": train, "backend": "vertex", "project": vertex.project, "region": vertex.location, "bucket": stack["bucket"],
            "poll_interval": 1, "run_name": "cancel", "local_root": str(stack["tmp"] / "cancel" / "root")}}
        run_id = _submit(stack, "tune/local", params, "cancel")
        deadline = time.monotonic() + 180
        start_polls = vertex.count("GET", "/tuningJobs/")
        with api(stack["url"]) as client:
            while vertex.count("GET", "/tuningJobs/") < start_polls + 2:  # the flow is awaiting the job
                assert time.monotonic() < deadline, tail(stack["worker_log"])
                time.sleep(0.5)
            client.set_flow_run_state(run_id, Cancelling(), force=True)
            while (state := client.read_flow_run(run_id).state).type.value not in TERMINAL:
                assert time.monotonic() < deadline, tail(stack["worker_log"])
                time.sleep(0.5)
        assert state.type.value == "CANCELLED"
        assert vertex.count("POST", ":cancel") == cancels + 1, tail(stack["worker_log"])
    finally:
        vertex.job_phases = old_phases


# ----------------------------------------------------------------------------------- approval in the UI
def _wait_for_state(stack, run_id: str, types: set[str], timeout: float = 300):
    deadline = time.monotonic() + timeout
    with api(stack["url"]) as client:
        while (run := client.read_flow_run(run_id)).state is None or run.state.type.value not in types | TERMINAL:
            assert time.monotonic() < deadline, f"{run.state and run.state.name}\n{tail(stack['worker_log'])}"
            assert stack["worker"].poll() is None, tail(stack["worker_log"])
            time.sleep(1)
    return run


def _logs(stack, run_id: str) -> str:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with api(stack["url"]) as client:
        return "\n".join(log.message for log in client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[uuid.UUID(run_id)]))))


def _creates(vertex) -> int:
    return sum(1 for r in vertex.requests if r["method"] == "POST" and r["path"].endswith("/tuningJobs"))


@pytest.fixture(scope="module")
def paused_runs(stack):
    """Three `tune` deployment runs whose estimate is above approve_above_usd, submitted at once: all
    pause for approval in the UI before any job is created (the third one's pause times out after 15 s)."""
    vertex = stack["vertex"]
    train = f"{stack['bucket']}/approval/train.jsonl"
    storage.write_bytes(train, b'{"contents":[{"role":"user","parts":[{"text":"Summarize: the cat sat."}]},'
                               b'{"role":"model","parts":[{"text":"A cat sat."}]}]}\n' * 3)
    creates = _creates(vertex)
    ids = {}
    for answer, timeout in (("yes", 3600), ("no", 3600), ("timeout", 15)):
        params = {"config": {
            "train_uri": train, "backend": "vertex", "project": vertex.project, "region": vertex.location,
            "bucket": stack["bucket"], "poll_interval": 1, "approve_above_usd": 0, "approval_timeout_s": timeout,
            "run_name": f"approve-{answer}",
            "local_root": str(stack["tmp"] / f"approve-{answer}" / "root")}}
        ids[answer] = _submit(stack, "tune/local", params, f"approve-{answer}")
    for answer in ("yes", "no"):
        assert _wait_for_state(stack, ids[answer], {"PAUSED"}).state.type.value == "PAUSED"
    assert _creates(vertex) == creates, "a job was created before approval"
    return ids


def _flow_processes(stack, run_id: str) -> list:
    """The worker's child processes running this flow run (the process worker passes PREFECT__FLOW_RUN_ID)."""
    import psutil

    found = []
    for child in psutil.Process(stack["worker"].pid).children(recursive=True):
        try:
            if child.environ().get("PREFECT__FLOW_RUN_ID") == run_id:
                found.append(child)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def test_a_suspended_approval_holds_no_process_and_its_resume_submits_one_job(stack):
    """approval_mode=suspend (the gcp deployment's): the run is Suspended with its form, its process has exited
    (no container would be held); resumed with approve=true it starts again from the top, the same pause key
    returns the answer, and exactly one job is submitted."""
    vertex = stack["vertex"]
    train = f"{stack['bucket']}/suspend/train.jsonl"
    storage.write_bytes(train, b'{"contents":[{"role":"user","parts":[{"text":"Summarize: a dog ran."}]},'
                               b'{"role":"model","parts":[{"text":"A dog ran."}]}]}\n' * 3)
    creates = _creates(vertex)
    params = {"config": {
        "train_uri": train, "backend": "vertex", "project": vertex.project, "region": vertex.location,
        "bucket": stack["bucket"], "poll_interval": 1, "approve_above_usd": 0, "approval_mode": "suspend",
        "run_name": "approve-suspend", "local_root": str(stack["tmp"] / "approve-suspend" / "root")}}
    run_id = _submit(stack, "tune/local", params, "approve-suspend")
    seen_running, deadline = False, time.monotonic() + 300
    with api(stack["url"]) as client:
        while (run := client.read_flow_run(run_id)).state is None or run.state.type.value not in {"PAUSED"} | TERMINAL:
            seen_running = seen_running or bool(_flow_processes(stack, run_id))
            assert time.monotonic() < deadline, tail(stack["worker_log"])
            time.sleep(0.3)
    assert seen_running, "the run's process was never seen: the check below would prove nothing"
    assert run.state.name == "Suspended" and run.state.state_details.pause_reschedule, run.state
    deadline = time.monotonic() + 60
    while _flow_processes(stack, run_id):  # the flow's process exits once the run is suspended
        assert time.monotonic() < deadline, "a suspended run still holds its process"
        time.sleep(0.5)
    assert _creates(vertex) == creates, "a job was created before approval"
    assert "run suspended for approval in the Prefect UI" in _logs(stack, run_id)

    with api(stack["url"]) as client:
        client.resume_flow_run(run_id, run_input={"approve": True, "note": "e2e: suspended"})
    _wait(stack, run_id)  # COMPLETED, or the test fails with the run's logs
    assert _creates(vertex) == creates + 1
    assert "tuning approved in the Prefect UI: e2e: suspended (the run was suspended)" in _logs(stack, run_id)


def test_ui_renders_the_paused_run(stack, paused_runs, tmp_path):
    if find_chromium() is None:  # fails in CI (.ci/run installs chromium)
        skip_loudly("the Prefect UI page of a run paused for approval (chromium is not installed)",
                    "apt-get install -y chromium, then rerun tests/test_e2e_deployment.py")
    png = tmp_path / "paused.png"
    dom = capture(flow_run_url(stack["ui"], paused_runs["yes"]), png)
    assert "Paused" in dom and "tune" in dom, dom[-2000:]
    assert png.stat().st_size > 10_000  # docs/ui-approval-paused.png is a copy of this picture


def test_resuming_in_the_ui_approves_one_job_or_rejects_with_none(stack, paused_runs):
    """The paused run shows the estimate; approve=true submits exactly one job and completes; a second
    run resumed with approve=false submits nothing and ends saying so."""
    vertex = stack["vertex"]
    arts = _artifacts(stack, paused_runs["yes"])
    approval = arts["tuning-approval"].data
    assert approval.startswith("# Approve this tuning job?") and "approve_above_usd" in approval
    assert "countTokens (Vertex AI)" in approval and "| config.epoch_count | `1` |" in approval
    creates = _creates(vertex)
    with api(stack["url"]) as client:
        client.resume_flow_run(paused_runs["yes"], run_input={"approve": True, "note": "e2e: fine"})
    _wait(stack, paused_runs["yes"])  # COMPLETED, or the test fails with the run's logs
    assert _creates(vertex) == creates + 1

    with api(stack["url"]) as client:
        client.resume_flow_run(paused_runs["no"], run_input={"approve": False, "note": "too dear"})
    run = _wait_for_state(stack, paused_runs["no"], set())
    assert run.state.type.value == "FAILED", run.state
    assert "tuning not approved (rejected in the Prefect UI: too dear)" in (run.state.message or ""), run.state.message

    run = _wait_for_state(stack, paused_runs["timeout"], set())  # nobody answered
    assert run.state.type.value == "FAILED", run.state
    # Prefect's server fails an expired pause itself, or the flow's own timeout does first: either says so.
    assert any(m in (run.state.message or "") for m in ("never resumed", "tuning not approved (no answer within 15 s)")
               ), run.state.message
    assert "no answer within 15 s ends the run with no job submitted" in _logs(stack, paused_runs["timeout"])
    assert _creates(vertex) == creates + 1, "a rejected or unanswered run submitted a job"
