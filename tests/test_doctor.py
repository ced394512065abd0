"""`sftflow doctor` and the preflight of `pipeline` / `tune` / `sweep` / `prepare` (issue 21, item 6).

Every failure is a real answer: the Vertex-shaped test server with its fault switches
(tests/servers/vertex_faults.py: a disabled API, denied permissions, tuning unavailable), a model it does
not offer, a wrong token; the GCS emulator with per-bucket faults (tests/servers/gcs_faults.py). No route to
Google, production addresses and service-account keys: tests/test_doctor_network.py.
"""

from __future__ import annotations

import time

import pytest

from sftflow.cli.main import main
from sftflow.infra import credentials, gcs
from sftflow.preflight import doctor
from tests.servers.gcs_faults import bucket_faults
from tests.servers.vertex_fixtures import TEST_TOKEN

PROJECT = "test-project"
#: Seconds a check may take in these tests. The doctor's calls are bounded (net.CALL_TIMEOUT_S each, never
#: retried: about 5 s at worst on an idle machine); the bound leaves room for a loaded 2-core machine and
#: still fails a client that retries (google-cloud-storage: up to 120 s per call).
BOUND_S = 30


@pytest.fixture(autouse=True)
def fresh():
    credentials.reset()
    gcs.reset_clients()
    doctor.forget()
    yield
    credentials.reset()
    gcs.reset_clients()
    doctor.forget()


@pytest.fixture
def server(make_vertex_server):
    return make_vertex_server(require_token=TEST_TOKEN)


@pytest.fixture
def settings_for(vertex_settings_for, gcs_bucket):
    def make(server, **overrides):
        return vertex_settings_for(server, bucket=gcs_bucket, **overrides)

    return make


def _objects(bucket: str) -> list[str]:
    return [b.name for b in gcs.client().list_blobs(bucket[5:])]


def _lines(report) -> list[str]:
    return [p.line() for p in report.problems]


# --------------------------------------------------------------------------- a good set-up


def test_good_setup_is_ready_with_read_only_calls_and_the_probe_object_removed(server, settings_for, gcs_bucket):
    report = doctor.run(settings_for(server))
    assert report.ready, _lines(report)
    text = "\n".join(f.line() for f in report.findings)
    assert [f.check for f in report.findings] == ["credentials", "vertex", "model", "tuning", "roles", "bucket"]
    assert f"ok: credentials: a static access token (SFTFLOW_VERTEX_ACCESS_TOKEN, id {credentials.token_id(TEST_TOKEN)})" in text
    assert TEST_TOKEN not in text
    assert "ok: model: gemini-2.5-flash is offered in us-central1 (countTokens)" in text
    assert f"ok: bucket: {gcs_bucket} exists and is writable" in text
    assert _objects(gcs_bucket) == []  # the probe object was removed
    assert server.count("POST", ":countTokens") == 1
    assert server.count("GET", "tuningJobs?pageSize=1") == 1
    assert server.count("POST", f"/v1/projects/{PROJECT}:testIamPermissions") == 1
    assert [r["method"] for r in server.requests if r["method"] not in ("GET",)] == ["POST", "POST"]  # no create
    assert report.elapsed_s < BOUND_S


def test_doctor_cli_exit_0_when_ready_and_1_with_one_line_per_problem(server, gcs_bucket, monkeypatch, capsys):
    monkeypatch.setenv("SFTFLOW_VERTEX_ACCESS_TOKEN", TEST_TOKEN)
    argv = ["doctor", "--backend", "vertex", "--project", PROJECT, "--bucket", gcs_bucket,
            "--set", f"vertex_base_url={server.base_url}"]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert "problem:" not in out.out and out.err.startswith("ready (")
    doctor.forget()
    server.faults.disabled_api = True
    assert main(argv) == 1
    out = capsys.readouterr()
    assert [line for line in out.out.splitlines() if line.startswith("problem:")] == [
        f"problem: vertex: the aiplatform.googleapis.com API is not enabled in project {PROJECT} — fix: "
        f"gcloud services enable aiplatform.googleapis.com --project {PROJECT}"]
    assert out.err.startswith("1 problem(s) (")


# --------------------------------------------------------------------------- each broken set-up: one line, its fix

def _disabled(server, gcs_bucket):
    server.faults.disabled_api = True


def _no_tuning_create(server, gcs_bucket):
    server.faults.denied = {"aiplatform.tuningJobs.create"}


def _no_predict(server, gcs_bucket):
    server.faults.denied = {"aiplatform.endpoints.predict"}


def _no_tuning(server, gcs_bucket):
    server.faults.tuning_unavailable = True


def _model_not_offered(server, gcs_bucket):
    server.base_models = ("gemini-2.0-flash-001",)


BROKEN = {
    "api disabled": (_disabled, "vertex: the aiplatform.googleapis.com API is not enabled in project test-project",
                     "gcloud services enable aiplatform.googleapis.com --project test-project"),
    "role lacks tuningJobs.create": (_no_tuning_create, "roles: a static access token (SFTFLOW_VERTEX_ACCESS_TOKEN, "
                                     "id {tid}) lacks aiplatform.tuningJobs.create on project test-project",
                                     "grant roles/aiplatform.user: gcloud projects add-iam-policy-binding "
                                     "test-project --member=MEMBER --role=roles/aiplatform.user"),
    "role lacks predict": (_no_predict, "roles: a static access token (SFTFLOW_VERTEX_ACCESS_TOKEN, id {tid}) lacks "
                           "aiplatform.endpoints.predict on project test-project", "roles/aiplatform.user"),
    "model not offered": (_model_not_offered, "model: gemini-2.5-flash is not offered in us-central1 (HTTP 404 "
                          "NOT_FOUND", "choose a region that offers it"),
    "tuning unavailable": (_no_tuning, "tuning: supervised tuning is not available in us-central1 (HTTP 400 "
                           "FAILED_PRECONDITION", "e.g. --region us-central1"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_each_broken_vertex_setup_is_one_line_with_its_fix(case, server, settings_for, gcs_bucket):
    breaks, message, fix = BROKEN[case]
    breaks(server, gcs_bucket)
    report = doctor.run(settings_for(server))
    assert len(report.problems) == 1, _lines(report)
    line = report.problems[0].line()
    assert line.startswith(message.format(tid=credentials.token_id(TEST_TOKEN))), line
    assert line.split(" — fix: ")[1].startswith(fix) or fix in line.split(" — fix: ")[1], line
    assert "\n" not in line and TEST_TOKEN not in line
    assert server.count("POST", "/tuningJobs") == 0
    assert report.elapsed_s < BOUND_S


def test_a_wrong_token_is_one_credentials_line_and_nothing_else_is_asked(server, settings_for):
    report = doctor.run(settings_for(server, vertex_access_token="not-the-token"))
    assert _lines(report) == ["credentials: Vertex AI refused a static access token (SFTFLOW_VERTEX_ACCESS_TOKEN, id "
                              f"{credentials.token_id('not-the-token')}) (HTTP 401 UNAUTHENTICATED: Request had invalid "
                              "authentication credentials.) — fix: get a new token (`gcloud auth print-access-token`) "
                              "or unset SFTFLOW_VERTEX_ACCESS_TOKEN"]
    assert server.count("GET", "tuningJobs") == 0


@pytest.mark.parametrize("fault, message", [
    (None, "bucket: bucket gs://{missing} does not exist — fix: gcloud storage buckets create gs://{missing} "
           "--project test-project --location us-central1"),
    ({"denied": {"storage.objects.delete"}}, "roles: a static access token (SFTFLOW_VERTEX_ACCESS_TOKEN, id {tid}) "
     "lacks storage.objects.delete on gs://{bucket} — fix: grant roles/storage.objectAdmin on the bucket: gcloud "
     "storage buckets add-iam-policy-binding gs://{bucket} --member=MEMBER --role=roles/storage.objectAdmin"),
    ({"read_only": True}, "bucket: a static access token (SFTFLOW_VERTEX_ACCESS_TOKEN, id {tid}) cannot write to "
     "gs://{bucket} (a probe object: HTTP 403 forbidden: caller does not have storage.objects.create access"),
])
def test_each_broken_bucket_is_one_line_with_its_fix(fault, message, server, vertex_settings_for, gcs_bucket):
    name = gcs_bucket[5:]
    values = dict(missing=f"{name}-missing", bucket=name, tid=credentials.token_id(TEST_TOKEN))
    if fault is None:
        settings = vertex_settings_for(server, bucket=f"gs://{values['missing']}")
        report = doctor.run(settings)
    else:
        with bucket_faults(name, **fault):
            report = doctor.run(vertex_settings_for(server, bucket=gcs_bucket))
    assert len(report.problems) == 1, _lines(report)
    assert report.problems[0].line().startswith(message.format(**values)), report.problems[0].line()
    assert _objects(gcs_bucket) == []


def test_transient_answers_and_an_unchecked_project_are_notes_not_problems(make_vertex_server, settings_for):
    server = make_vertex_server(require_token=TEST_TOKEN, fault_rate=1.0, fault_codes=(503,))
    server.faults.resource_manager_disabled = True
    report = doctor.run(settings_for(server))
    assert report.ready, _lines(report)
    notes = [f.line() for f in report.findings if f.kind == "note"]
    assert notes[0].startswith("note: vertex: call gemini-2.5-flash (countTokens): not decided, Vertex AI answered "
                               "HTTP 503"), notes
    assert any("project roles not checked: the cloudresourcemanager.googleapis.com API is not enabled" in n
               for n in notes), notes


# --------------------------------------------------------------------------- pipeline / tune / sweep stop first


@pytest.mark.parametrize("command", ["pipeline", "tune", "sweep", "prepare"])
def test_commands_on_a_broken_project_stop_before_anything_is_downloaded_or_uploaded(
        command, server, gcs_bucket, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SFTFLOW_VERTEX_ACCESS_TOKEN", TEST_TOKEN)
    if command == "prepare":  # prepare needs only the bucket
        fault = bucket_faults(gcs_bucket[5:], read_only=True)
    else:
        server.faults.disabled_api = True
        fault = bucket_faults("unused")
    root = tmp_path / "root"
    started = time.monotonic()
    with fault:
        code = main([command, "--backend", "vertex", "--project", PROJECT, "--bucket", gcs_bucket,
                     "--local-root", str(root), "--set", f"vertex_base_url={server.base_url}"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert time.monotonic() - started < BOUND_S
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("sftflow: error: "), lines
    assert lines[1] == f"sftflow: {command} stopped before it started (`sftflow doctor` checks again)"
    assert not root.exists(), "something was downloaded or written"
    assert _objects(gcs_bucket) == []
    assert server.count("POST", "/tuningJobs") == 0 and server.count("POST", ":generateContent") == 0


def test_a_passing_preflight_is_reused_briefly_and_a_failing_one_is_not(server, settings_for, monkeypatch):
    settings = settings_for(server)
    doctor.require_ready(settings)
    asked = len(server.requests)
    doctor.require_ready(settings)
    assert len(server.requests) == asked  # cached
    monkeypatch.setattr(doctor, "CACHE_TTL_S", 0.0)
    server.faults.disabled_api = True
    with pytest.raises(doctor.PreflightError, match="API is not enabled"):
        doctor.require_ready(settings)
    server.faults.disabled_api = False
    doctor.require_ready(settings)
    assert len(server.requests) > asked + 1


def test_prepare_against_the_emulator_needs_no_credentials(vertex_settings_for, gcs_bucket, monkeypatch):
    """sftflow.infra.gcs talks to STORAGE_EMULATOR_HOST anonymously (as the SDK does): so does the storage preflight."""
    from tests.servers.vertex_server import VertexTestServer

    monkeypatch.setenv("NO_GCE_CHECK", "true")
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    settings = vertex_settings_for(VertexTestServer(), bucket=gcs_bucket, vertex_access_token=None)
    report = doctor.run(settings, "storage")
    assert report.ready, _lines(report)
    assert [f.line() for f in report.findings][0] == "ok: credentials: anonymous (STORAGE_EMULATOR_HOST)"
