"""`sftflow doctor`: is the chosen backend, with these settings, ready for a run? In seconds, for free.

Credentials first (found, whose, a token obtained); then, side by side, Vertex AI (`vertex_checks`)
and the bucket (`storage_checks`). Every call is read-only or removes what it made (the bucket's probe
object), bounded by `net.CALL_TIMEOUT_S` and never retried, so a broken set-up answers in about ten
seconds at worst. `pipeline`, `tune` and `sweep` on vertex call `require_ready` before anything is
downloaded or uploaded (`prepare`: its storage half); a passing answer is kept `CACHE_TTL_S` seconds
per process and per settings, so a process that starts several runs asks once.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from sftflow.errors import SftflowError
from sftflow.infra import credentials
from sftflow.preflight import identity as identity_check
from sftflow.preflight.problem import Finding, Problem, Report

Scope = Literal["run", "storage"]
#: Seconds a passing preflight is reused by later runs of the same process with the same settings.
CACHE_TTL_S = 300.0

_lock = threading.Lock()
_cache: dict[tuple, tuple[float, Report]] = {}


class PreflightError(SftflowError, RuntimeError):
    """The set-up is not ready; `.problems` holds one line each, with its fix."""

    def __init__(self, problems: tuple[Problem, ...]):
        self.problems = problems
        super().__init__("\n".join(p.line() for p in problems))


def run(settings, scope: Scope = "run") -> Report:
    """Every check `scope` needs for `settings.backend`: findings (ok / note lines) and problems."""
    started = time.monotonic()
    findings: list[Finding] = []
    problems: list[Problem] = []
    vertex = settings.backend == "vertex" and scope == "run"
    if settings.backend == "vertex" and not settings.bucket:
        problems.append(Problem(check="bucket", message="no bucket set: Vertex AI reads tuning data from Cloud "
                                "Storage", fix="--bucket gs://BUCKET (or SFTFLOW_BUCKET)"))
    if not vertex and not settings.bucket:
        findings.append(Finding(check="credentials", kind="ok", text="backend local with local storage: nothing "
                                "on Google Cloud to check"))
        return Report(findings=tuple(findings), problems=tuple(problems), elapsed_s=time.monotonic() - started)
    credentials.use_token(settings.vertex_access_token)  # the storage client uses it, as in a run
    if not vertex and settings.vertex_access_token is None and os.environ.get("STORAGE_EMULATOR_HOST"):
        # sftflow.infra.gcs talks to an emulator anonymously, as the SDK does: no credentials to find
        identity, found = identity_check.Identity(None, "anonymous", "anonymous (STORAGE_EMULATOR_HOST)", "MEMBER"), []
    else:
        identity, found = identity_check.check(settings)
    problems += found
    if identity is not None and not found:
        findings.append(Finding(check="credentials", kind="ok", text=identity.who))
    if identity is None or found:
        return Report(findings=tuple(findings), problems=tuple(problems), elapsed_s=time.monotonic() - started)
    groups = []
    if vertex:
        from sftflow.preflight import vertex_checks

        groups.append(vertex_checks.check)
    if settings.bucket:
        from sftflow.preflight import storage_checks

        groups.append(storage_checks.check)
    with ThreadPoolExecutor(max_workers=len(groups), thread_name_prefix="sftflow-doctor") as pool:
        futures = [pool.submit(group, settings, identity) for group in groups]
        for future in futures:
            f, p = future.result()
            findings += f
            problems += p
    return Report(findings=tuple(findings), problems=tuple(problems), elapsed_s=time.monotonic() - started)


def _key(settings, scope: Scope) -> tuple:
    return (scope, settings.backend, settings.project, settings.region, settings.bucket, settings.base_model,
            settings.vertex_base_url, settings.eval_mode, credentials.token_id(settings.vertex_access_token),
            os.environ.get("STORAGE_EMULATOR_HOST"), os.environ.get("API_ENDPOINT_OVERRIDE"))


def require_ready(settings, scope: Scope = "run") -> Report:
    """`run`, reusing a passing answer for the same settings younger than CACHE_TTL_S; raises PreflightError
    with every problem when the set-up is not ready."""
    key = _key(settings, scope)
    now = time.monotonic()
    with _lock:
        hit = _cache.get(key)
    if hit is not None and now - hit[0] < CACHE_TTL_S:
        return hit[1]
    report = run(settings, scope)
    if not report.ready:
        raise PreflightError(report.problems)
    with _lock:
        _cache[key] = (time.monotonic(), report)
    return report


def forget() -> None:
    """Drop every cached answer (tests; a user who just fixed the set-up runs a new process anyway)."""
    with _lock:
        _cache.clear()
