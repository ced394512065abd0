"""Which exceptions are worth retrying: the one definition every retry in sftflow uses."""

from __future__ import annotations

import email.utils
import socket
import time
import urllib.error

from sftflow.errors import TransientError


def is_transient_status(code: int) -> bool:
    """HTTP statuses worth retrying: 408 (timeout), 429 (quota) and every 5xx."""
    return code in (408, 429) or 500 <= code <= 599


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delay-seconds or an HTTP-date.

    RFC 9110 section 10.2.3 (https://www.rfc-editor.org/rfc/rfc9110#section-10.2.3). Returns None
    when there is no usable value; a date in the past gives 0.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:  # RFC 9110 dates are always GMT
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def is_transient(exc: BaseException) -> bool:
    """Connection errors, timeouts, HTTP 408/429/5xx: yes. Bad input, 4xx, our own checks: no."""
    if isinstance(exc, (TransientError, ConnectionError, TimeoutError, socket.timeout)):
        return True
    if isinstance(exc, urllib.error.HTTPError):
        return is_transient_status(exc.code)
    if isinstance(exc, urllib.error.URLError):
        return True
    code = getattr(exc, "code", None)
    if type(exc).__module__.startswith(("google.api_core", "google.genai", "google.auth")):
        if isinstance(code, int):
            return is_transient_status(code)
        name = type(exc).__name__
        return name in {"TransportError", "RetryError", "ServiceUnavailable", "TooManyRequests"}
    try:
        import requests

        if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
            return True
    except ImportError:  # pragma: no cover
        pass
    return False
