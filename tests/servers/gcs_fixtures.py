"""A real GCS emulator (gcp-storage-emulator) on 127.0.0.1 for the tests that touch gs:// URIs.

The emulator starts once per session, but `STORAGE_EMULATOR_HOST` is set only for the tests that
ask for it (`gcs_emulator`, `gcs_bucket`) and restored after each: a test that does not use the
emulator never sends gs:// traffic to it by accident (nor to Google).
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def emulator_env(url: str) -> Iterator[str]:
    """Point google-cloud-storage at the emulator for the duration of the block, then restore."""
    from sftflow.infra import gcs

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STORAGE_EMULATOR_HOST", url)
        gcs.reset_clients()
        try:
            yield url
        finally:
            gcs.reset_clients()
    gcs.reset_clients()


@pytest.fixture(scope="session")
def gcs_emulator_server() -> Iterator[str]:
    """The emulator, started once per session; yields its base URL (sets no environment)."""
    from gcp_storage_emulator.server import create_server

    from tests.servers.gcs_preconditions import install

    install()  # ifGenerationMatch, which the emulator otherwise ignores (claims rely on it)
    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def gcs_emulator(gcs_emulator_server) -> Iterator[str]:
    """The emulator's base URL, with STORAGE_EMULATOR_HOST set for this test only."""
    with emulator_env(gcs_emulator_server) as url:
        yield url


@pytest.fixture
def gcs_bucket(gcs_emulator) -> str:
    """A fresh, empty bucket on the emulator; yields its gs:// URI."""
    from sftflow.infra import gcs

    name = f"test-{uuid.uuid4().hex[:12]}"
    gcs.client().create_bucket(name)
    return f"gs://{name}"
