"""Vertex AI checks: reachable, API enabled, the base model offered in the region (countTokens, free),
tuning available there (a list of tuning jobs with pageSize 1), and the project roles a run needs
(Cloud Resource Manager's `projects.testIamPermissions`, which any caller may ask:
https://cloud.google.com/resource-manager/reference/rest/v1/projects/testIamPermissions).

With `vertex_base_url` set (a test server), the Resource Manager call goes to that address too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sftflow.backends.vertex_client import make_genai_client, vertex_base_url
from sftflow.preflight import google_error, net
from sftflow.preflight.identity import LOGIN_FIX, Identity
from sftflow.preflight.problem import Finding, Problem

RESOURCE_MANAGER = "https://cloudresourcemanager.googleapis.com"
LOCATIONS = "https://cloud.google.com/vertex-ai/generative-ai/docs/learn/locations"
#: What a run does on the project (roles/aiplatform.user grants all of them:
#: https://cloud.google.com/vertex-ai/docs/general/access-control#aiplatform.user).
RUN_PERMISSIONS = (
    "aiplatform.endpoints.predict", "aiplatform.endpoints.get", "aiplatform.tuningJobs.create",
    "aiplatform.tuningJobs.get", "aiplatform.tuningJobs.list", "aiplatform.tuningJobs.cancel",
    "aiplatform.models.get", "aiplatform.models.update",
)
BATCH_PERMISSIONS = ("aiplatform.batchPredictionJobs.create", "aiplatform.batchPredictionJobs.get",
                     "aiplatform.batchPredictionJobs.list", "aiplatform.batchPredictionJobs.cancel")

Outcome = tuple[str, Any]  # ("ok", value) | ("network", exc) | ("api", ApiError)


def _call(fn: Callable[[], Any]) -> Outcome:
    try:
        return "ok", fn()
    except Exception as exc:  # noqa: BLE001 - sorted below; anything else is a bug and re-raised
        err = google_error.from_exception(exc)
        if err is not None:
            return "api", err
        if net.is_network_error(exc):
            return "network", exc
        raise


def grant_fix(settings, identity: Identity, role: str = "roles/aiplatform.user") -> str:
    return (f"grant {role}: gcloud projects add-iam-policy-binding {settings.project} "
            f"--member={identity.member} --role={role}")


def enable_fix(service: str, project: str) -> str:
    return f"gcloud services enable {service} --project {project}"


def _common(err: google_error.ApiError, what: str, settings, identity: Identity) -> Problem | Finding | None:
    """The answers every Vertex call can get: 401, a disabled API, a denied permission, a transient error."""
    p = settings.project
    if err.code == 401:
        fix = ("get a new token (`gcloud auth print-access-token`) or unset SFTFLOW_VERTEX_ACCESS_TOKEN"
               if identity.source == "token" else LOGIN_FIX)
        return Problem(check="credentials", message=f"Vertex AI refused {identity.who} ({err.brief()})", fix=fix)
    if err.code == 403 and err.reason == "SERVICE_DISABLED":
        service = err.metadata.get("service") or "aiplatform.googleapis.com"
        return Problem(check="vertex", message=f"the {service} API is not enabled in project {p}",
                       fix=enable_fix(service, p))
    if err.code == 403:
        return Problem(check="roles", message=f"{identity.who} may not {what} in project {p}, or the project does "
                       f"not exist ({err.brief()})", fix=grant_fix(settings, identity))
    if google_error.is_transient(err):
        return Finding(check="vertex", kind="note", text=f"{what}: not decided, Vertex AI answered {err.brief()}")
    return None


def check(settings, identity: Identity) -> tuple[list[Finding], list[Problem]]:
    findings: list[Finding] = []
    problems: list[Problem] = []
    url, region, model = vertex_base_url(settings), settings.region, settings.base_model
    client = make_genai_client(settings, timeout_s=net.CALL_TIMEOUT_S)

    def sort(outcome: Outcome, what: str) -> google_error.ApiError | None | bool:
        """True: passed; False: reported (stop); an ApiError: for the caller to read."""
        kind, value = outcome
        if kind == "ok":
            return True
        if kind == "network":
            problems.append(Problem(check="network", message=f"cannot reach Vertex AI at {url} ({net.why(value)})",
                                    fix=net.unreachable_fix(url)))
            return False
        found = _common(value, what, settings, identity)
        if isinstance(found, Problem):
            problems.append(found)
            return False
        if isinstance(found, Finding):
            findings.append(found)
            return False
        return value

    counted = sort(_call(lambda: client.models.count_tokens(model=model, contents="sftflow doctor")),
                   f"call {model} (countTokens)")
    if counted is False:
        if any(p.check in ("network", "credentials", "vertex") for p in problems):
            return findings, problems  # every later call would say the same
    elif counted is True:
        findings.append(Finding(check="vertex", kind="ok",
                                text=f"Vertex AI at {url} answers for project {settings.project}"))
        findings.append(Finding(check="model", kind="ok", text=f"{model} is offered in {region} (countTokens)"))
    else:
        problems.append(Problem(check="model", message=f"{model} is not offered in {region} "
                                f"({counted.brief()})", fix=f"choose a region that offers it ({LOCATIONS}), e.g. "
                                "--region us-central1, or another base model (--source-model)"))

    from google.genai import types

    listed = sort(_call(lambda: next(iter(client.tunings.list(config=types.ListTuningJobsConfig(page_size=1))),
                                     None)), "list tuning jobs")
    if listed is True:
        findings.append(Finding(check="tuning", kind="ok", text=f"supervised tuning answers in {region} "
                                "(tuningJobs.list)"))
    elif isinstance(listed, google_error.ApiError):
        problems.append(Problem(check="tuning", message=f"supervised tuning is not available in {region} "
                                f"({listed.brief()})", fix=f"choose a region that offers it ({LOCATIONS}), "
                                "e.g. --region us-central1"))
    if any(p.check == "network" for p in problems):
        return findings, problems
    wanted = RUN_PERMISSIONS + (BATCH_PERMISSIONS if settings.eval_mode != "online" else ())
    denials = [p for p in problems if p.check == "roles"]
    problems = [p for p in problems if p.check != "roles"]
    _project_roles(settings, identity, wanted, findings, problems)
    if not any(p.check == "roles" for p in problems):  # Resource Manager's list covers a call's denial
        problems += denials
    return findings, problems


def _project_roles(settings, identity: Identity, wanted: tuple[str, ...], findings: list[Finding],
                   problems: list[Problem]) -> None:
    from google.auth.transport.requests import AuthorizedSession

    base = (settings.vertex_base_url or RESOURCE_MANAGER).rstrip("/")
    url = f"{base}/v1/projects/{settings.project}:testIamPermissions"

    def ask():
        with AuthorizedSession(identity.credentials) as session:
            return session.post(url, json={"permissions": list(wanted)}, timeout=net.CALL_TIMEOUT_S)

    kind, value = _call(ask)
    if kind == "network":
        problems.append(Problem(check="network", message=f"cannot reach Cloud Resource Manager at {base} "
                                f"({net.why(value)})", fix=net.unreachable_fix(base)))
        return
    try:
        payload = value.json()
    except ValueError:
        payload = None
    if value.status_code != 200:
        err = google_error.from_payload(value.status_code, payload)
        found = _common(err, "read its own permissions", settings, identity)
        if isinstance(found, Problem) and found.check == "vertex":  # Resource Manager's own API is off
            findings.append(Finding(check="roles", kind="note", text=f"project roles not checked: {found.message} "
                                    f"({found.fix})"))
        elif isinstance(found, (Problem, Finding)):
            (problems if isinstance(found, Problem) else findings).append(found)
        else:
            findings.append(Finding(check="roles", kind="note", text=f"project roles not checked ({err.brief()})"))
        return
    granted = set((payload or {}).get("permissions") or [])
    missing = [p for p in wanted if p not in granted]
    if missing:
        problems.append(Problem(check="roles", message=f"{identity.who} lacks {', '.join(missing)} on project "
                                f"{settings.project}", fix=grant_fix(settings, identity)))
    else:
        findings.append(Finding(check="roles", kind="ok", text=f"{len(wanted)} permissions a run needs on project "
                                f"{settings.project}"))
