"""Approval task: is a job for this intent already running (its cost committed, so no gate applies)?"""

from __future__ import annotations

from prefect import task

from sftflow.backends import make_tuner
from sftflow.config import Settings
from sftflow.tuning.intent import live_job
from tasks.common import RETRY_TRANSIENT, retry_transient


@task(name="find-live-tuning-job", retry_condition_fn=retry_transient, **RETRY_TRANSIENT)
def find_live_job(settings: Settings, key: str) -> str | None:
    """sftflow.tuning.intent.live_job with this backend's tuner, retried on transient errors."""
    return live_job(make_tuner(settings), key)
