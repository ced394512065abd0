"""Shared fixtures: servers on 127.0.0.1 (GCS emulator, Vertex-shaped server) and isolation."""

import os
import tempfile

# Offline, quiet Prefect with its own home per test session (a fresh database and result store),
# set before anything imports prefect; subprocesses started by tests inherit it.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="sftflow-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

pytest_plugins = ["tests.servers.gcs_fixtures", "tests.servers.vertex_fixtures"]
