"""The google-cloud-storage client this process uses, one per (credentials, endpoint).

Credentials come from `sftflow.infra.credentials` (the static token, else application-default, else
anonymous: public reads only). `STORAGE_EMULATOR_HOST` (the SDK's own variable) points the
client at an emulator. Reads and writes go through `sftflow.infra.storage`, never this client directly.
"""

from __future__ import annotations

import os
import threading

from sftflow.infra import credentials

_client_lock = threading.Lock()
_clients: dict[tuple, object] = {}


def client():
    """The google-cloud-storage client for this process's credentials (see sftflow.infra.credentials).

    One client per (token, endpoint): the static token when one is configured, else
    application-default credentials, else anonymous (public reads only). With
    `STORAGE_EMULATOR_HOST` and no token the client is anonymous, as the SDK itself does.
    """
    token = credentials.process_token()
    endpoint = os.environ.get("STORAGE_EMULATOR_HOST") or os.environ.get("API_ENDPOINT_OVERRIDE")
    key = (credentials.token_id(token), endpoint)
    with _client_lock:
        cached = _clients.get(key)
    if cached is not None:
        return cached
    # Resolved outside our lock: credentials has its own, and never calls back into storage.
    if token is None and os.environ.get("STORAGE_EMULATOR_HOST"):
        resolved = None
    else:
        resolved = credentials.resolve(token)
    made = _make_client(resolved)
    with _client_lock:
        return _clients.setdefault(key, made)


def _make_client(resolved):
    from google.cloud import storage as gcs

    if resolved is None or resolved.source == "anonymous":
        return gcs.Client.create_anonymous_client()
    # An explicit project (or the placeholder the SDK's own anonymous client uses) keeps the
    # client from running its own credentials/project discovery.
    made = gcs.Client(project=resolved.project or "<none>", credentials=resolved.credentials)
    if resolved.project is None:
        made.project = None
    return made


def reset_clients() -> None:
    """Forget cached clients (tests start emulators on new ports)."""
    with _client_lock:
        _clients.clear()
