"""One real `prefect server` for the session, started when a test first asks for it.

A CLI subprocess without PREFECT_API_URL starts Prefect's temporary API server: ~12-20 s of every
such test on 2 cores. CLI tests whose subject is not that temporary server point their subprocess
here instead (`prefect_api_env`), as a user with `sftflow server start` does. Tests that check the
temporary server's own behaviour, or read their own Prefect home's database, keep their own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory) -> Iterator:
    """deployments.local_server.LocalServer: `.url` (API), `.ui`, `.env`; stopped at the session's end."""
    from deployments.local_server import local_prefect_server

    with local_prefect_server(tmp_path_factory.mktemp("session-prefect") / "home") as server:
        yield server


@pytest.fixture
def prefect_api_env(prefect_server) -> dict[str, str]:
    """What to add to a CLI subprocess's environment so that its flow runs go to the session's server."""
    return {"PREFECT_API_URL": prefect_server.url}
