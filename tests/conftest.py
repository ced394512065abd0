"""Shared fixtures: servers on 127.0.0.1 (GCS emulator, Vertex-shaped server) and isolation."""

import os
import tempfile
import uuid

import pytest

# Test runs never talk to a developer's Prefect server or Prefect Cloud, nor use their database,
# profiles or result store: every inherited PREFECT_* variable is dropped (PREFECT_API_URL,
# PREFECT_API_KEY, PREFECT_PROFILE, PREFECT_PROFILES_PATH, a database URL, ...) before anything
# imports prefect. Prefect then runs in ephemeral mode against its own home for this session: a
# fresh database and result store. One home per session, not per test: each new home costs an
# ephemeral API server start (~12 s on 2 cores, /work/shared/notes/prefect.md), and flow tests
# keep apart through their own local_root (results, checkpoints, cache keys that include paths).
# Likewise sftflow's own settings (SFTFLOW_BACKEND=vertex, a project, a token) and an inherited
# STORAGE_EMULATOR_HOST: tests that want the emulator get it from the gcs_emulator fixture.
# Subprocesses started by tests inherit this environment.
_KEEP = {"SFTFLOW_TEST_SESSION"}  # a pytest run inside a test keeps its parent session's mark
for _name in [n for n in os.environ if (n.startswith(("PREFECT_", "SFTFLOW_")) or n == "STORAGE_EMULATOR_HOST")
              and n not in _KEEP]:
    del os.environ[_name]
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="sftflow-prefect-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
os.environ["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"] = "ignore"  # tasks called outside a flow in tests
_NESTED = "SFTFLOW_TEST_SESSION" in os.environ  # a pytest run inside a test: its parent checks for leftovers
os.environ.setdefault("SFTFLOW_TEST_SESSION", uuid.uuid4().hex)  # marks the servers tests start

pytest_plugins = ["tests.servers.gcs_fixtures", "tests.servers.vertex_fixtures", "tests.servers.prefect_fixtures"]


@pytest.hookimpl(trylast=True)  # after pytest's own sessionfinish has torn down session fixtures (their servers)
def pytest_sessionfinish(session, exitstatus):
    """No Prefect server a test started may outlive the session: kill any left, and fail the run. A nested run
    shares its parent's mark, so it leaves the check to the parent (it would kill the parent's live servers)."""
    if _NESTED:
        return
    from tests.servers.leftovers import stop_leftover_servers

    if left := stop_leftover_servers(os.environ["SFTFLOW_TEST_SESSION"]):
        print("\nprefect servers left running by tests (killed now):\n  " + "\n  ".join(left))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    """Repeat every check skipped on this machine (tests.skips.skip_loudly) where nobody can miss it."""
    from tests.skips import NOT_CHECKED

    if NOT_CHECKED:
        terminalreporter.section("checks skipped on this machine", sep="!", red=True, bold=True)
        for line in NOT_CHECKED:
            terminalreporter.write_line(line, red=True, bold=True)


@pytest.fixture(autouse=True)
def _environment_restored_after_each_test():
    """Tests that run the CLI in-process (`main()`) change os.environ (PREFECT_RESULTS_LOCAL_STORAGE_PATH,
    PREFECT_API_URL, SFTFLOW_VERTEX_ACCESS_TOKEN, ...); later tests and their subprocesses must not inherit it."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
