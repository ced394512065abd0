"""Run only by tests/test_isolation.py, in a subprocess whose environment points Prefect at a
server that does not exist: under tests/conftest.py a flow must still run, locally."""

import os


def test_a_flow_runs_on_the_tests_own_prefect():
    from prefect import flow
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    assert settings.api.url is None and settings.api.key is None
    assert str(settings.home) == os.environ["PREFECT_HOME"] != os.environ["PROBE_DEVELOPER_HOME"]
    assert "STORAGE_EMULATOR_HOST" not in os.environ

    @flow
    def tiny(x: int) -> int:
        return x + 1

    assert tiny(1) == 2
