"""pytest fixtures that start the Vertex-shaped test server (tests/servers/vertex_server.py)."""

from __future__ import annotations

import pytest

from tests.servers.vertex_server import VertexTestServer

TEST_TOKEN = "test-token-s3cr3t-do-not-log"


@pytest.fixture
def make_vertex_server():
    """Factory: `make_vertex_server(job_phases=(0.3, 0.6), fault_rate=0.5, ...)` → started server."""
    servers: list[VertexTestServer] = []

    def make(**kw) -> VertexTestServer:
        server = VertexTestServer(**kw).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def vertex_server(make_vertex_server) -> VertexTestServer:
    """A started server with default settings (1 s PENDING, 2 s RUNNING, jobs succeed)."""
    return make_vertex_server()


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
