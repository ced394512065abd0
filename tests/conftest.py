"""Shared fixtures: servers on 127.0.0.1 (GCS emulator, Vertex-shaped server) and isolation."""

import os
import tempfile
import uuid

import pytest

# Offline, quiet Prefect with its own home per test session (a fresh database and result store),
# set before anything imports prefect; subprocesses started by tests inherit it.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="sftflow-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("SFTFLOW_TEST_SESSION", uuid.uuid4().hex)  # marks the servers tests start

pytest_plugins = ["tests.servers.gcs_fixtures", "tests.servers.vertex_fixtures"]


def pytest_sessionfinish(session, exitstatus):
    """No Prefect server a test started may outlive the session: kill any left, and fail the run."""
    from tests.servers.leftovers import stop_leftover_servers

    if left := stop_leftover_servers(os.environ["SFTFLOW_TEST_SESSION"]):
        print("\nprefect servers left running by tests (killed now):\n  " + "\n  ".join(left))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
