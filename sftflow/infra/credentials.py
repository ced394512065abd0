"""One credentials resolver for every Google client: static token → application-default → anonymous.

Storage (google-cloud-storage), generation and tuning (google-genai) and cleanup (aiplatform's
REST clients) all ask `resolve()`; none of them looks for credentials on its own, so the answer
is the same everywhere and is decided once per process (and once per token).

Never blocking: `google.auth.default()` ends its search by pinging the Compute Engine metadata
server (3 tries, 3 s timeout each, with backoff: ~12 s where that address black-holes packets,
https://github.com/googleapis/google-auth-library-python/blob/main/google/auth/compute_engine/_metadata.py).
We only let it get that far after one short probe of our own (`METADATA_PROBE_TIMEOUT_S`, or the
SDK's `GCE_METADATA_TIMEOUT`) has seen a server answer `Metadata-Flavor: Google`. Off Google
Cloud with no key file and no `gcloud auth application-default login`, the answer is anonymous
(public reads only) in about a second at worst. `NO_GCE_CHECK=true` skips the probe.

Thread-safe and never re-entrant: one plain lock guards the decision, and nothing called while
it is held calls back into this module.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sftflow.errors import CredentialsError

log = logging.getLogger(__name__)

#: Scope that covers Cloud Storage and Vertex AI (what google-genai itself asks for).
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
#: Seconds one probe of the metadata server may take before we decide there is none.
METADATA_PROBE_TIMEOUT_S = 1.0
_DEFAULT_METADATA_IP = "169.254.169.254"

Source = Literal["token", "adc", "anonymous"]


@dataclass(frozen=True)
class Resolved:
    """The credentials every Google client of this process uses, and where they came from."""

    credentials: Any  # google.auth.credentials.Credentials
    project: str | None
    source: Source


_lock = threading.Lock()
_adc: Resolved | None = None
_tokens: dict[str, Resolved] = {}
_process_token: str | None = None


def _secret(token: Any) -> str | None:
    if token is None:
        return None
    value = token.get_secret_value() if hasattr(token, "get_secret_value") else str(token)
    return value or None


def token_id(token: Any) -> str | None:
    """A short, non-reversible name for a token (cache keys, never logs of the token itself)."""
    value = _secret(token)
    return hashlib.sha256(value.encode()).hexdigest()[:16] if value else None


def use_token(token: Any) -> None:
    """Make `token` (str, SecretStr or None) this process's default, e.g. for Cloud Storage calls
    that do not carry settings. Flows call it when they build their settings."""
    global _process_token
    with _lock:
        _process_token = _secret(token)


def process_token() -> str | None:
    with _lock:
        return _process_token


def resolve(token: Any = None) -> Resolved:
    """Credentials for a Google client: `token` if given, else application-default, else anonymous."""
    global _adc
    value = _secret(token)
    if value is not None and (not value.strip() or any(c.isspace() or not c.isprintable() for c in value)):
        # A bearer token holds no blank; such a header is refused by the HTTP client before it leaves
        # (httpx: "Illegal header value"), which would otherwise look like a network fault and be retried.
        raise CredentialsError("the access token (SFTFLOW_VERTEX_ACCESS_TOKEN) is blank or holds whitespace: "
                               "set it to the output of `gcloud auth print-access-token`, or unset it")
    with _lock:
        if value is not None:
            key = hashlib.sha256(value.encode()).hexdigest()
            if key not in _tokens:
                import google.oauth2.credentials

                # No refresh token and no expiry: never refreshed, so no metadata lookup ever.
                creds = google.oauth2.credentials.Credentials(token=value)
                _tokens[key] = Resolved(creds, _environ_project(), "token")
            return _tokens[key]
        if _adc is None:
            _adc = _discover()
            log.info("Google credentials: %s", _adc.source)
        return _adc


def reset() -> None:
    """Forget every decision (tests that change the environment between cases)."""
    global _adc, _process_token
    with _lock:
        _adc, _process_token = None, None
        _tokens.clear()


# --------------------------------------------------------------------------- discovery


def _environ_project() -> str | None:
    return os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("GCLOUD_PROJECT") or None


def _anonymous() -> Resolved:
    from google.auth.credentials import AnonymousCredentials

    return Resolved(AnonymousCredentials(), _environ_project(), "anonymous")


def _adc_file() -> Path | None:
    """The key file application-default credentials would read, if any (explicit or gcloud's)."""
    explicit = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if explicit:
        return Path(explicit)
    config = os.environ.get("CLOUDSDK_CONFIG")
    if config:
        base = Path(config)
    elif os.name == "nt":
        base = Path(os.environ.get("APPDATA", "")) / "gcloud"
    else:
        base = Path.home() / ".config" / "gcloud"
    path = base / "application_default_credentials.json"
    return path if path.is_file() else None


def _probe_timeout() -> float:
    try:
        return float(os.environ.get("GCE_METADATA_TIMEOUT") or METADATA_PROBE_TIMEOUT_S)
    except ValueError:
        return METADATA_PROBE_TIMEOUT_S


def metadata_server_answers(timeout: float | None = None) -> bool:
    """One short GET of the metadata server (the address google-auth pings, `GCE_METADATA_IP`
    honoured): True only if it answers as Google's metadata server does."""
    if os.environ.get("NO_GCE_CHECK") == "true":
        return False
    ip = os.environ.get("GCE_METADATA_IP") or _DEFAULT_METADATA_IP
    req = urllib.request.Request(f"http://{ip}/", headers={"Metadata-Flavor": "Google"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        with opener.open(req, timeout=timeout or _probe_timeout()) as r:
            return r.headers.get("Metadata-Flavor") == "Google"
    except urllib.error.HTTPError as exc:
        return exc.headers.get("Metadata-Flavor") == "Google"
    except (OSError, ValueError):  # refused, unreachable, timed out
        return False


class _BoundedRequest:
    """google-auth's requests transport with every call's timeout capped (metadata lookups)."""

    def __init__(self, cap_s: float):
        import google.auth.transport.requests

        self._inner = google.auth.transport.requests.Request()
        self._cap = cap_s

    def __call__(self, url, method="GET", body=None, headers=None, timeout=None, **kwargs):
        timeout = self._cap if timeout is None else min(timeout, self._cap)
        return self._inner(url, method=method, body=body, headers=headers, timeout=timeout, **kwargs)


def adc_file() -> Path | None:
    """The key file application-default credentials would read, if any (for `sftflow doctor`'s report)."""
    return _adc_file()


def bounded_request(cap_s: float):
    """A google-auth transport request whose every call's timeout is at most `cap_s` seconds (refresh, probes)."""
    return _BoundedRequest(cap_s)


def _discover() -> Resolved:
    import google.auth
    import google.auth.exceptions

    key_file = _adc_file()
    if key_file is None and not metadata_server_answers():
        log.info("no application-default credentials and no metadata server: anonymous (public reads only)")
        return _anonymous()
    try:
        creds, project = google.auth.default(scopes=list(SCOPES), request=_BoundedRequest(2 * _probe_timeout()))
    except google.auth.exceptions.DefaultCredentialsError as exc:
        if key_file is not None:
            name = "GOOGLE_APPLICATION_CREDENTIALS" if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS") else "gcloud ADC"
            reason = " ".join(str(exc).split())[:300]
            raise CredentialsError(
                f"{name} ({key_file}): cannot be used: {reason}; fix or remove it, "
                "or set SFTFLOW_VERTEX_ACCESS_TOKEN"
            ) from None
        log.warning("metadata server answered but gave no credentials: anonymous (public reads only)")
        return _anonymous()
    return Resolved(creds, _environ_project() or project, "adc")
