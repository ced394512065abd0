"""Network facts the checks share: how long one call may take, and which errors mean "cannot reach".

Every preflight call is bounded (`CALL_TIMEOUT_S`) and never retried, so a host that refuses, drops
packets or accepts and never answers is reported in seconds: google-cloud-storage's default retry
keeps retrying connection errors for up to 120 s per call
(https://cloud.google.com/python/docs/reference/storage/latest/retry_timeout).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

#: Seconds one preflight call may take (connect and read alike) before the host counts as unreachable.
CALL_TIMEOUT_S = 4.0


def network_error_classes() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the request never got an HTTP answer (refused, timed out, DNS, proxy)."""
    import google.auth.exceptions
    import httpx
    import requests

    classes: list[type[BaseException]] = [httpx.TransportError, requests.ConnectionError, requests.Timeout,
                                          google.auth.exceptions.TransportError, OSError]
    try:
        import httpx2  # google-genai uses it when installed

        classes.append(httpx2.TransportError)
    except ImportError:
        pass
    return tuple(classes)


def is_network_error(exc: BaseException) -> bool:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:  # the SDKs wrap the transport's error
        if isinstance(exc, network_error_classes()):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def why(exc: BaseException) -> str:
    """A short reason for a network error: "timed out", "connection refused", or the error's class."""
    text = f"{type(exc).__name__} {exc}".lower()
    if "timed out" in text or "timeout" in text:
        return "timed out"
    if "refused" in text:
        return "connection refused"
    if "proxy" in text:
        return "the proxy refused the connection"
    if "name or service not known" in text or "nodename" in text or "getaddrinfo" in text:
        return "the host name does not resolve"
    return type(exc).__name__


def unreachable_fix(url: str) -> str:
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    via = f" (through the proxy {proxy})" if proxy and urlsplit(url).scheme == "https" else ""
    return f"check the network route to {host(url)}{via}: are you online, is a proxy or firewall dropping it?"


def host(url: str) -> str:
    parts = urlsplit(url if "://" in url else f"https://{url}")
    return parts.netloc or url


def storage_url() -> str:
    """Where Cloud Storage calls go: the SDK's emulator/override variables, else Google's host."""
    return (os.environ.get("STORAGE_EMULATOR_HOST") or os.environ.get("API_ENDPOINT_OVERRIDE")
            or "https://storage.googleapis.com").rstrip("/")
