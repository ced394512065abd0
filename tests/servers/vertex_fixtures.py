"""pytest fixtures that start the Vertex-shaped test server (tests/servers/vertex_server.py)."""

from __future__ import annotations

import pytest

from tests.servers.vertex_server import TEST_TOKEN, VertexTestServer


#: One chat example in the tuning format (user turn, model turn).
TUNING_LINE = b'{"contents":[{"role":"user","parts":[{"text":"a"}]},{"role":"model","parts":[{"text":"b"}]}]}\n'


@pytest.fixture
def make_vertex_server(gcs_emulator):
    """Factory: `make_vertex_server(job_phases=(0.3, 0.6), fault_rate=0.5, ...)` → started server.

    Tuning datasets must exist in the GCS emulator, as on Vertex: the server reads them there. Every
    request must carry `TEST_TOKEN` (what `token_in_env` and `vertex_settings_for` give sftflow). At
    teardown the test fails if the server raised inside a handler or answered something that does not fit
    Google's API description (`server.failures`).
    """
    servers: list[VertexTestServer] = []

    def make(**kw) -> VertexTestServer:
        kw.setdefault("gcs_url", gcs_emulator)
        server = VertexTestServer(**kw).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
    assert_no_server_failures(servers)


def assert_no_server_failures(servers) -> None:
    """Fail the test when a server recorded a bug of its own or an answer off Google's API description."""
    failures = [f for server in servers for f in server.failures]
    if failures:
        pytest.fail("the Vertex test server failed (a server bug or an answer off Google's API description):\n"
                    + "\n".join(failures), pytrace=False)


@pytest.fixture
def vertex_server(make_vertex_server) -> VertexTestServer:
    """A started server with default settings (1 s PENDING, 2 s RUNNING, jobs succeed)."""
    return make_vertex_server()


def upload_datasets(bucket: str, line: bytes = TUNING_LINE) -> tuple[str, str, str]:
    """(bucket, train URI with 3 examples, val URI with 1) uploaded to the emulator."""
    from sftflow.infra import storage

    train, val = f"{bucket}/datasets/train/train.jsonl", f"{bucket}/datasets/val/val.jsonl"
    storage.write_bytes(train, line * 3)
    storage.write_bytes(val, line)
    return bucket, train, val


@pytest.fixture
def tuning_datasets(gcs_bucket) -> dict[str, str]:
    """{"train": gs://…/train.jsonl (3 examples), "val": gs://…/val.jsonl (1)} uploaded to the emulator."""
    _, train, val = upload_datasets(gcs_bucket)
    return {"train": train, "val": val}


@pytest.fixture
def token_in_env(monkeypatch):
    """The token comes from the environment, as in real use: a flow refuses it as a parameter."""
    monkeypatch.setenv("SFTFLOW_VERTEX_ACCESS_TOKEN", TEST_TOKEN)


def flow_config(server: VertexTestServer, bucket: str, tmp_path, **extra) -> dict:
    """A flow `config` pointing the vertex backend at `server` (the token comes from the environment)."""
    return {"backend": "vertex", "project": server.project, "region": server.location, "bucket": bucket,
            "vertex_base_url": server.base_url, "poll_interval": 1,
            "local_root": str(tmp_path / "root"), **extra}


@pytest.fixture
def vertex_settings_for():
    """`vertex_settings_for(server, **overrides)` → Settings pointing the vertex backend at it."""
    from sftflow.config import Settings

    def make(server: VertexTestServer, **overrides):
        values = dict(
            backend="vertex",
            project=server.project,
            region=server.location,
            bucket="gs://test-bucket",
            vertex_base_url=server.base_url,
            vertex_access_token=TEST_TOKEN,
        )
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make
