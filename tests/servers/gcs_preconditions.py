"""Cloud Storage's `ifGenerationMatch` precondition for object uploads, added to gcp-storage-emulator.

The emulator (2026.7.19) accepts `ifGenerationMatch` and ignores it, so "create only if absent"
(`if_generation_match=0`) could not be tested against it. This wraps its upload handler to answer
as Cloud Storage documents: 412 `conditionNotMet` when the object's live generation differs from
the one asked for, 0 meaning "no live object" (https://cloud.google.com/storage/docs/request-preconditions).
The check and the write happen under one lock, so concurrent uploads race as they do on GCS.
Requests without the parameter are served exactly as before.
"""

from __future__ import annotations

import threading
from http import HTTPStatus

_lock = threading.Lock()
_installed = False


def _object_name(request) -> str | None:
    if request.query.get("name"):
        return request.query["name"][0]
    data = request.data if isinstance(request.data, dict) else {}
    return (data.get("meta") or {}).get("name") or data.get("name")


def install() -> None:
    """Make the in-process emulator honour ifGenerationMatch on uploads (idempotent)."""
    global _installed
    if _installed:
        return
    from gcp_storage_emulator import server as emulator_server
    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    original = objects.insert

    def insert(request, response, storage, *args, **kwargs):
        wanted = request.query.get("ifGenerationMatch")
        if not wanted:
            return original(request, response, storage, *args, **kwargs)
        with _lock:
            try:
                current = str(storage.get_file_obj(request.params["bucket_name"], _object_name(request))["generation"])
            except NotFound:
                current = "0"
            if current != wanted[0]:
                response.status = HTTPStatus.PRECONDITION_FAILED
                message = "At least one of the pre-conditions you specified did not hold."
                response.json({"error": {"code": 412, "message": message,
                                         "errors": [{"reason": "conditionNotMet", "message": message,
                                                     "domain": "global"}]}})
                return None
            return original(request, response, storage, *args, **kwargs)

    objects.insert = insert  # the router's fallback for POST .../o looks it up here
    for _, handlers in emulator_server.HANDLERS:
        for method, handler in list(handlers.items()):
            if handler is original:
                handlers[method] = insert
    _installed = True
