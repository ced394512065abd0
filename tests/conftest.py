"""Shared fixtures: servers on 127.0.0.1 (GCS emulator, Vertex-shaped server) and isolation."""

import os

# Offline and quiet Prefect for every test process (and the subprocesses tests start).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

pytest_plugins = ["tests.servers.gcs_fixtures", "tests.servers.vertex_fixtures"]
