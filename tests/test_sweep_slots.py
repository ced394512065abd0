"""The sweep's tuning slots: an in-process semaphore without a server, a Prefect global concurrency limit with one."""

from __future__ import annotations

import contextvars
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from sftflow.config import Settings
from sftflow.selection.sweep import limit_name
from tasks.sweep import tuning_slot


def _hold_all(name: str, limit: int, workers: int, hold_s: float) -> tuple[int, set[str]]:
    """`workers` threads each hold a slot for `hold_s`; returns (most inside at once, kinds of limit)."""
    lock, inside, top, kinds = threading.Lock(), [0], [0], set()

    def work(_):
        with tuning_slot(name, limit) as kind:
            with lock:
                inside[0] += 1
                top[0] = max(top[0], inside[0])
                kinds.add(kind)
            time.sleep(hold_s)
            with lock:
                inside[0] -= 1

    with ThreadPoolExecutor(workers) as pool:  # each thread sees this context's settings, as Prefect's task threads do
        contexts = [contextvars.copy_context() for _ in range(workers)]
        list(pool.map(lambda ctx: ctx.run(work, ctx), contexts))
    return top[0], kinds


def test_without_a_server_the_limit_is_an_in_process_semaphore():
    assert _hold_all("test-slots-local", 2, 5, 0.2) == (2, {"in-process"})


def test_limit_names_are_per_quota_and_safe():
    vertex = Settings(_env_file=None, backend="vertex", project="my.proj", region="europe-west4")
    assert limit_name(vertex.backend, vertex.project, vertex.region) == "sftflow-tuning-vertex-my.proj-europe-west4"
    local = Settings(_env_file=None)
    assert limit_name(local.backend, local.project, local.region) == "sftflow-tuning-local-local"


@pytest.mark.slow
def test_with_a_server_the_limit_is_a_prefect_global_concurrency_limit(prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_server.url}):  # the session's server
        top, kinds = _hold_all("test-slots-gcl", 2, 3, 1.5)
        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name("test-slots-gcl")
    assert (top, kinds) == (2, {"prefect-global-concurrency-limit"})
    assert limit.limit == 2 and limit.active_slots == 0  # every slot released
