"""`sftflow doctor` with no route to Google, Google's production addresses and service-account keys, all without a
network (issue 21, items 6 and 7).

Dead addresses are on 127.0.0.1: a listening socket that never answers and a closed port. Google's production
hosts are reached only as far as an HTTPS proxy on 127.0.0.1 that records each `CONNECT host:port` and refuses
it: the test sees where every client would go, and nothing leaves the machine. A service-account key is
generated per test; its token URI is Google's or a 127.0.0.1 server answering 400 or 503.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from sftflow.preflight import doctor
from tests.servers.google_tokens import TokenServer, service_account_key_file
from tests.servers.vertex_fixtures import TEST_TOKEN
from tests.test_doctor import BOUND_S, _lines, fresh, server, settings_for  # noqa: F401 - fixtures
from tests.unhappy.helpers_http import RefusingProxy, SilentServer, closed_port

# --------------------------------------------------------------------------- no route to Google


@pytest.fixture(params=["silent", "closed"])
def dead_address(request):
    """127.0.0.1 addresses with no answer: a listening socket that never answers, and a closed port."""
    if request.param == "closed":
        yield f"http://127.0.0.1:{closed_port()}", "connection refused"
        return
    with SilentServer() as silent:
        yield f"http://{silent.address}", "timed out"


def test_no_route_says_cannot_reach_within_seconds(dead_address, vertex_settings_for, monkeypatch):
    url, why = dead_address
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
    from tests.servers.vertex_server import VertexTestServer

    settings = vertex_settings_for(VertexTestServer(), vertex_base_url=url, bucket="gs://b")
    report = doctor.run(settings)
    assert _lines(report) == [
        f"network: cannot reach Vertex AI at {url} ({why}) — fix: check the network route to {url[7:]}: are you "
        "online, is a proxy or firewall dropping it?",
        f"network: cannot reach Cloud Storage at {url} ({why}) — fix: check the network route to {url[7:]}: are you "
        "online, is a proxy or firewall dropping it?"]
    assert report.elapsed_s < BOUND_S


def _cli(args: list[str], env: dict[str, str], timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "sftflow.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    return done, time.monotonic() - started


def _clean_env(tmp_path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SFTFLOW_", "GOOGLE_", "STORAGE_EMULATOR", "API_ENDPOINT", "PREFECT_API"))
           and k.lower() not in ("https_proxy", "http_proxy", "no_proxy", "all_proxy")}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), NO_GCE_CHECK="true", PYTHONPATH=os.getcwd(), **extra)
    return env


@pytest.mark.slow
@pytest.mark.parametrize("command", ["pipeline", "prepare"])
def test_cli_with_no_route_to_google_says_cannot_reach_within_seconds(command, tmp_path):
    """A new user's command on a laptop whose proxy refuses everything: Google's production hosts, no emulator."""
    with RefusingProxy() as proxy:
        env = _clean_env(tmp_path, HTTPS_PROXY=proxy.url, SFTFLOW_VERTEX_ACCESS_TOKEN=TEST_TOKEN)
        done, took = _cli([command, "--backend", "vertex", "--project", "p", "--bucket", "gs://b",
                           "--local-root", str(tmp_path / "root")], env)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "sftflow: error: network: cannot reach Cloud Storage at https://storage.googleapis.com" in done.stderr
    if command == "pipeline":
        assert ("sftflow: error: network: cannot reach Vertex AI at https://us-central1-aiplatform.googleapis.com"
                in done.stderr)
    assert took < 2 * BOUND_S, took  # Python start-up included
    assert not (tmp_path / "root").exists()
    assert set(proxy.targets) <= {"storage.googleapis.com:443", "us-central1-aiplatform.googleapis.com:443",
                                  "cloudresourcemanager.googleapis.com:443"}, proxy.targets


# --------------------------------------------------------------------------- production addresses, no network


@pytest.mark.parametrize("region, host", [("us-central1", "us-central1-aiplatform.googleapis.com"),
                                          ("europe-west4", "europe-west4-aiplatform.googleapis.com"),
                                          ("global", "aiplatform.googleapis.com")])
def test_clients_without_a_base_url_target_googles_hosts(region, host, monkeypatch):
    from sftflow.backends.base import JobState, JobStatus
    from sftflow.backends.vertex import VertexTuner
    from sftflow.config import Settings
    from sftflow.errors import SftflowError

    for name in ("STORAGE_EMULATOR_HOST", "API_ENDPOINT_OVERRIDE", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with RefusingProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        settings = Settings(_env_file=None, backend="vertex", project="p", region=region, bucket="gs://b",
                            vertex_access_token="tok")
        report = doctor.run(settings)  # genai (countTokens) and Cloud Storage
        assert {p.check for p in report.problems} == {"network"}
        assert [t for t in proxy.targets if "aiplatform" in t] == [f"{host}:443"], proxy.targets
        assert "storage.googleapis.com:443" in proxy.targets
        proxy.targets.clear()
        status = JobStatus(name=f"projects/p/locations/{region}/tuningJobs/1", state=JobState.SUCCEEDED,
                           endpoint=f"projects/p/locations/{region}/endpoints/1")
        with pytest.raises(SftflowError):  # google-cloud-aiplatform's REST client (cleanup, reuse checks)
            VertexTuner(settings).outputs_exist(status)
        assert [t for t in proxy.targets if "aiplatform" in t] == [f"{host}:443"], proxy.targets


# --------------------------------------------------------------------------- service-account keys


@pytest.mark.parametrize("status, says", [
    (400, "refused (invalid_grant: Invalid JWT Signature.) — fix: the key was deleted, revoked or is malformed: "
          "create a new key"),
    (503, "the token service is unavailable (unavailable: None) — fix: retry in a minute"),
])
def test_a_service_account_key_whose_token_uri_fails_is_one_line_not_a_hang(status, says, tmp_path, monkeypatch,
                                                                              server, settings_for):
    token_server = TokenServer(status)
    try:
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS",
                           service_account_key_file(tmp_path / "key.json", token_server.url))
        report = doctor.run(settings_for(server, vertex_access_token=None))
    finally:
        token_server.close()
    assert _lines(report) == [
        f"credentials: cannot get an access token for service account runner@p.iam.gserviceaccount.com "
        f"(GOOGLE_APPLICATION_CREDENTIALS {tmp_path / 'key.json'}) from {token_server.url}: {says}"
        + ("" if status == 503 else " (`gcloud iam service-accounts keys create`) or run `gcloud auth "
           "application-default login`, or set SFTFLOW_VERTEX_ACCESS_TOKEN")]
    assert token_server.hits >= 1 and server.requests == []
    assert report.elapsed_s < BOUND_S


def test_a_service_account_key_asks_googles_token_uri(tmp_path, monkeypatch, server, settings_for):
    key = service_account_key_file(tmp_path / "key.json")  # the key's default token URI
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", key)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with RefusingProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        report = doctor.run(settings_for(server, vertex_access_token=None))
    # google-cloud-storage 3.17 fetches bucket metadata in a daemon thread with its default retry (up to 120 s,
    # _bucket_metadata_cache.py): an earlier test's fetch may still knock, at storage's host only.
    assert "oauth2.googleapis.com:443" in proxy.targets
    assert set(proxy.targets) <= {"oauth2.googleapis.com:443", "storage.googleapis.com:443"}, proxy.targets
    assert _lines(report)[0].startswith("network: cannot reach oauth2.googleapis.com (the proxy refused the "
                                        "connection) to get an access token for service account runner@p.iam")

