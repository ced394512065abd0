"""Unhappy paths of credentials and cleanup (issue 9, items 1 and 2).

Credentials: no application-default credentials and a metadata address that never answers must not
hang anything; a static token reaches Cloud Storage too; many threads resolve at once without a
deadlock. Cleanup: only what sftflow made is deleted (sibling runs, user files and corrupt records
survive), a cleaned result is never served from Prefect's cache, and a SUCCEEDED job whose model
was deleted is not re-attached.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from sftflow import credentials, storage
from tests.unhappy.helpers_http import RecordingProxy, SilentServer

TOKEN = "tok-for-storage-test-only"


@pytest.fixture
def fresh_credentials():
    """Each test decides credentials from scratch, and leaves no process token behind."""
    credentials.reset()
    storage.reset_clients()
    yield
    credentials.reset()
    storage.reset_clients()


@pytest.fixture
def no_adc(tmp_path, monkeypatch):
    """An environment with no Google credentials at all, and a metadata address that black-holes."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG", "NO_GCE_CHECK", "GCE_METADATA_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    with SilentServer() as silent:
        monkeypatch.setenv("GCE_METADATA_IP", silent.address)
        yield silent


# --------------------------------------------------------------------------- item 1: credentials


def test_no_credentials_reads_a_public_object_without_hanging(gcs_emulator, no_adc, tmp_path):
    """A fresh machine (empty HOME, no key file, no gcloud, a metadata address that never answers)
    reads a public object within seconds. The child reaches the emulator through the SDK's
    API_ENDPOINT_OVERRIDE, not STORAGE_EMULATOR_HOST, so it takes the production credentials path."""
    bucket = "public-" + os.urandom(4).hex()
    storage.gcs_client().create_bucket(bucket)
    storage.write_text(f"gs://{bucket}/samples/test.csv", "input_text,output_text\na,b\n")
    env = {k: v for k, v in os.environ.items() if k not in ("STORAGE_EMULATOR_HOST", "SFTFLOW_VERTEX_ACCESS_TOKEN")}
    env["API_ENDPOINT_OVERRIDE"] = gcs_emulator
    code = textwrap.dedent(f"""
        import time
        t = time.monotonic()
        from sftflow import credentials, storage
        text = storage.read_text("gs://{bucket}/samples/test.csv")
        print(credentials.resolve().source, round(time.monotonic() - t, 2), repr(text))
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    source, elapsed, text = proc.stdout.split(" ", 2)
    assert source == "anonymous"
    assert text.strip() == repr("input_text,output_text\na,b\n")
    assert float(elapsed) < 8.0, proc.stdout  # one 1 s probe, not google-auth's 3 x 3 s plus backoff
    assert no_adc.connections == 1  # the metadata address was probed once, by us only


def test_static_token_reaches_cloud_storage(gcs_emulator, fresh_credentials, monkeypatch):
    """With a token, every storage request carries `Authorization: Bearer <token>`; without, none does."""
    bucket = "tok-" + os.urandom(4).hex()
    storage.gcs_client().create_bucket(bucket)
    with RecordingProxy(gcs_emulator) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        uri = f"gs://{bucket}/runs/exp/a.txt"
        credentials.use_token(TOKEN)
        storage.write_text(uri, "hello")
        assert storage.read_text(uri) == "hello"
        assert storage.list_uris(f"gs://{bucket}/runs/exp") == [uri]
        assert storage.exists(uri)
        with_token = list(proxy.requests)
        credentials.use_token(None)
        assert storage.read_text(uri) == "hello"  # the emulator serves anonymous reads
        anonymous = proxy.requests[len(with_token):]
    assert len(with_token) >= 4
    assert {r["authorization"] for r in with_token} == {f"Bearer {TOKEN}"}
    assert anonymous and all(r["authorization"] is None for r in anonymous)


def test_many_threads_resolve_at_once_without_deadlock(no_adc, fresh_credentials, monkeypatch):
    """32 threads ask for credentials and a storage client at the same moment: all return, with one
    decision (one probe of the metadata address), and one token resolves to one credential."""
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    barrier = threading.Barrier(32)
    results: list[tuple] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait(10)
            token = TOKEN if i % 2 else None
            results.append((token, credentials.resolve(token), storage.gcs_client() if not token else None))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(32)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a thread is stuck: deadlock"
    assert not errors, errors
    assert time.monotonic() - start < 15
    anon = {id(r) for tok, r, _ in results if tok is None}
    tok = {id(r) for t, r, _ in results if t is not None}
    clients = {id(c) for _, _, c in results if c is not None}
    assert len(anon) == 1 and len(tok) == 1 and len(clients) == 1
    assert credentials.resolve().source == "anonymous" and credentials.resolve(TOKEN).source == "token"
    assert no_adc.connections == 1


def test_adc_key_file_is_used_without_any_network(no_adc, fresh_credentials, tmp_path, monkeypatch):
    """A key file (here gcloud-style user credentials) wins over the metadata server: no probe at all."""
    key = tmp_path / "adc.json"
    key.write_text(json.dumps({"type": "authorized_user", "client_id": "c", "client_secret": "s",
                               "refresh_token": "r"}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    assert credentials.resolve().source == "adc"
    assert no_adc.connections == 0


def test_unusable_key_file_is_one_line_naming_it(no_adc, fresh_credentials, tmp_path, monkeypatch):
    key = tmp_path / "broken.json"
    key.write_text("{not json")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    with pytest.raises(credentials.CredentialsError) as info:
        credentials.resolve()
    message = str(info.value)
    assert "\n" not in message and "GOOGLE_APPLICATION_CREDENTIALS" in message and str(key) in message


def test_vertex_without_any_credentials_is_a_one_line_error(no_adc, fresh_credentials, monkeypatch):
    """The genai client is refused at once with what to do, instead of hanging in google-auth."""
    from sftflow.backends.base import BackendError
    from sftflow.backends.vertex import make_genai_client
    from sftflow.config import Settings

    monkeypatch.delenv("SFTFLOW_VERTEX_ACCESS_TOKEN", raising=False)
    s = Settings(_env_file=None, backend="vertex", project="p", vertex_base_url="http://127.0.0.1:9")
    start = time.monotonic()
    with pytest.raises(BackendError, match="SFTFLOW_VERTEX_ACCESS_TOKEN"):
        make_genai_client(s)
    assert time.monotonic() - start < 5
