"""Which credentials a run would use, whose they are (never the secret), and whether they give a token.

The credentials are `sftflow.infra.credentials.resolve`'s (static token → application-default →
anonymous), the same object every Google client of the run uses. Refreshing them is the first call
a run makes; here it is bounded (`net.CALL_TIMEOUT_S` per try), so a key whose token URI refuses,
answers 400 (a deleted or revoked key) or 503 gives one line instead of a hang.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from sftflow.errors import CredentialsError
from sftflow.infra import credentials as creds_mod
from sftflow.preflight import net
from sftflow.preflight.problem import Problem

LOGIN_FIX = "run `gcloud auth application-default login`, or set SFTFLOW_VERTEX_ACCESS_TOKEN"


@dataclass(frozen=True)
class Identity:
    """The credentials found: what they are, whose, and the IAM member to grant roles to."""

    credentials: Any
    source: str  # token | adc | anonymous
    who: str  # e.g. "service account sa@p.iam.gserviceaccount.com (GOOGLE_APPLICATION_CREDENTIALS /k.json)"
    member: str  # e.g. "serviceAccount:sa@p.iam.gserviceaccount.com"; "MEMBER" when unknown


def _where() -> str:
    explicit = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if explicit:
        return f"GOOGLE_APPLICATION_CREDENTIALS {explicit}"
    found = creds_mod.adc_file()
    return f"gcloud application-default credentials {found}" if found else "the metadata server"


def describe(resolved: creds_mod.Resolved, token: Any = None) -> tuple[str, str]:
    """(who, IAM member) for resolved credentials; a static token is named by its id, never shown."""
    if resolved.source == "token":
        return (f"a static access token (SFTFLOW_VERTEX_ACCESS_TOKEN, id {creds_mod.token_id(token)})",
                "MEMBER")
    if resolved.source == "anonymous":
        return "anonymous (no credentials: public reads only)", "MEMBER"
    c = resolved.credentials
    email = getattr(c, "service_account_email", None)
    if email and email != "default":
        return f"service account {email} ({_where()})", f"serviceAccount:{email}"
    account = getattr(c, "account", None)
    if account:
        return f"user {account} ({_where()})", f"user:{account}"
    kind = type(c).__module__.rsplit(".", 1)[-1].replace("_", " ")
    return f"{kind} credentials ({_where()})", "MEMBER"


def token_uri(credentials: Any) -> str | None:
    """The URI the credentials get their tokens from (service-account and user keys keep it)."""
    return getattr(credentials, "_token_uri", None) or getattr(credentials, "token_uri", None)


def check(settings) -> tuple[Identity | None, list[Problem]]:
    """Find the credentials and get a token with them (bounded): (identity, problems)."""
    token = settings.vertex_access_token
    try:
        resolved = creds_mod.resolve(token)
    except CredentialsError as exc:  # its message ends with its own fix
        message, _, fix = str(exc).rpartition("; ")
        return None, [Problem(check="credentials", message=message or fix, fix=fix if message else LOGIN_FIX)]
    who, member = describe(resolved, token)
    identity = Identity(resolved.credentials, resolved.source, who, member)
    if resolved.source == "anonymous":
        return identity, [Problem(check="credentials", message="no Google credentials found (Vertex AI and a "
                                  "private bucket need them)", fix=LOGIN_FIX)]
    if resolved.source == "token":
        return identity, []  # never refreshed; Vertex AI's answer tells whether it is accepted
    return identity, _refresh(identity)


def _refresh(identity: Identity) -> list[Problem]:
    import google.auth.exceptions

    c = identity.credentials
    if getattr(c, "valid", False):
        return []
    uri = token_uri(c) or "the token service"
    try:
        c.refresh(creds_mod.bounded_request(net.CALL_TIMEOUT_S))
    except google.auth.exceptions.RefreshError as exc:
        detail = _refresh_detail(exc)
        if getattr(exc, "retryable", False):
            return [Problem(check="credentials", message=f"cannot get an access token for {identity.who} from {uri}: "
                            f"the token service is unavailable ({detail})", fix="retry in a minute")]
        return [Problem(check="credentials", message=f"cannot get an access token for {identity.who} from {uri}: "
                        f"refused ({detail})", fix="the key was deleted, revoked or is malformed: create a new key "
                        "(`gcloud iam service-accounts keys create`) or " + LOGIN_FIX)]
    except Exception as exc:  # noqa: BLE001 - a transport error of any SDK layer
        if net.is_network_error(exc):
            return [Problem(check="network", message=f"cannot reach {net.host(uri)} ({net.why(exc)}) to get an "
                            f"access token for {identity.who}", fix=net.unreachable_fix(uri))]
        raise
    return []


def _refresh_detail(exc: BaseException) -> str:
    args = getattr(exc, "args", ())
    text = str(args[0]) if args else str(exc)
    return " ".join(text.split())[:160] or type(exc).__name__
