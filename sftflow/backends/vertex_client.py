"""Clients for Vertex AI and the translation of their errors.

`make_genai_client` builds the google-genai client every Vertex call uses (project, region,
`settings.vertex_base_url`, credentials from `sftflow.infra.credentials`). `translated` / `call` turn
Google SDK exceptions into `TransientError` (worth retrying) or `BackendError` (permanent), so
nothing above this module needs to know a Google exception class. The token is never logged and
never put into an exception message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from google.genai import errors as genai_errors
from google.genai import types

from sftflow.errors import BackendError, CredentialsError, TransientError
from sftflow.infra.transient import is_transient_status, parse_retry_after

if TYPE_CHECKING:
    from google import genai

    from sftflow.config import Settings

T = TypeVar("T")


def vertex_credentials(settings: Settings):
    """The credentials every Vertex client uses (sftflow.infra.credentials: token → ADC → anonymous).

    Anonymous credentials cannot call Vertex AI, so that case is a one-line error here.
    """
    from sftflow.infra.credentials import resolve

    try:
        resolved = resolve(settings.vertex_access_token)
    except CredentialsError as exc:
        raise BackendError(str(exc)) from None
    if resolved.source == "anonymous":
        raise BackendError(
            "no Google credentials found — run `gcloud auth application-default login` "
            "or set SFTFLOW_VERTEX_ACCESS_TOKEN"
        )
    return resolved.credentials


def vertex_api_host(region: str) -> str:
    """Vertex AI's host for `region`: `{region}-aiplatform.googleapis.com`, and the global endpoint
    `aiplatform.googleapis.com` for `global` (https://cloud.google.com/vertex-ai/generative-ai/docs/learn/locations)."""
    return "aiplatform.googleapis.com" if region == "global" else f"{region}-aiplatform.googleapis.com"


def gapic_endpoint(settings: Settings) -> str:
    """The `api_endpoint` handed to google-cloud-aiplatform's clients: `vertex_base_url`, else Google's host."""
    return settings.vertex_base_url or vertex_api_host(settings.region)


def vertex_base_url(settings: Settings) -> str:
    """The URL Vertex AI calls go to, for messages: `vertex_base_url`, else https://<Google's host>."""
    return (settings.vertex_base_url or f"https://{vertex_api_host(settings.region)}").rstrip("/")


def make_genai_client(settings: Settings, timeout_s: float | None = None) -> genai.Client:
    """A google-genai client for Vertex AI in `settings.project` / `settings.region`."""
    from google import genai

    if not settings.project:
        raise BackendError("project: required for the vertex backend (set SFTFLOW_PROJECT or --project)")
    timeout_ms = int(1000 * (timeout_s if timeout_s is not None else settings.request_timeout))
    with translated("creating the google-genai client"):
        return genai.Client(
            vertexai=True,
            project=settings.project,
            location=settings.region,
            credentials=vertex_credentials(settings),
            http_options=types.HttpOptions(base_url=settings.vertex_base_url, timeout=timeout_ms),
        )


def _transient_classes() -> tuple[type[BaseException], ...]:
    """Network-level exception classes (no HTTP status) that are worth retrying."""
    import google.auth.exceptions
    import httpx
    import requests

    classes: list[type[BaseException]] = [
        httpx.TransportError,
        requests.ConnectionError,
        requests.Timeout,
        google.auth.exceptions.TransportError,
        TimeoutError,
        ConnectionError,
    ]
    try:
        import httpx2  # google-genai uses it when installed

        classes.append(httpx2.TransportError)
    except ImportError:
        pass
    return tuple(classes)


def _describe(exc: BaseException) -> str:
    """A one-line description of an SDK error, safe to log (SDK messages carry no credentials)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:500]}" if text else type(exc).__name__


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Re-raise SDK errors as TransientError (retry) or BackendError (permanent)."""
    import google.api_core.exceptions as gexc
    import google.auth.exceptions

    try:
        yield
    except (TransientError, BackendError):
        raise
    except genai_errors.APIError as exc:
        code = int(exc.code or 0)
        label = f"{code} {exc.status or ''}".strip()
        message = f"{what}: HTTP {label}: {exc.message or ''}".rstrip()
        if is_transient_status(code):
            raise TransientError(message, kind=label, retry_after=_retry_after(exc)) from exc
        raise BackendError(message, kind=label) from exc
    except gexc.GoogleAPICallError as exc:
        code = int(exc.code or 0)
        kind = TransientError if is_transient_status(code) else BackendError
        raise kind(f"{what}: HTTP {code}: {exc.message}", kind=f"{code} {type(exc).__name__}") from exc
    except google.auth.exceptions.DefaultCredentialsError as exc:
        raise BackendError(
            f"{what}: no Google credentials found — run `gcloud auth application-default login` "
            "or set SFTFLOW_VERTEX_ACCESS_TOKEN"
        ) from exc
    except google.auth.exceptions.RefreshError as exc:
        kind = TransientError if getattr(exc, "retryable", False) else BackendError
        raise kind(f"{what}: could not refresh Google credentials ({type(exc).__name__})",
                   kind=type(exc).__name__) from exc
    except _transient_classes() as exc:
        raise TransientError(f"{what}: {_describe(exc)}", kind=type(exc).__name__) from exc


def _retry_after(exc: genai_errors.APIError) -> float | None:
    """The `Retry-After` of the HTTP response behind a google-genai APIError, in seconds.

    APIError keeps the transport's response object (httpx or aiohttp), whose `headers` is a
    case-insensitive mapping: https://github.com/googleapis/python-genai/blob/main/google/genai/errors.py
    """
    headers = getattr(getattr(exc, "response", None), "headers", None)
    try:
        value = headers.get("retry-after") if headers is not None else None
    except Exception:  # noqa: BLE001 - an odd response object must not mask the API error
        return None
    return parse_retry_after(value)


def call(what: str, fn: Callable[[], T]) -> T:
    """`fn()`, its SDK errors translated (see `translated`)."""
    with translated(what):
        return fn()
