"""Which exceptions are worth retrying: the one definition every retry in sftflow uses."""

from __future__ import annotations

import socket
import urllib.error

from sftflow.backends.base import TransientError



def is_transient_status(code: int) -> bool:
    """HTTP statuses worth retrying: 408 (timeout), 429 (quota) and every 5xx."""
    return code in (408, 429) or 500 <= code <= 599


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
