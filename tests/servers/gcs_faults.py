"""Per-bucket faults for gcp-storage-emulator, in Cloud Storage's words, for the preflight tests.

The emulator grants every permission `testIamPermissions` is asked about and lets anyone write.
`bucket_faults(name, denied={...}, read_only=True)` makes one bucket answer as Cloud Storage does for
a caller without those permissions: testIamPermissions leaves `denied` out
(https://cloud.google.com/storage/docs/json_api/v1/buckets/testIamPermissions), and an upload to a
read-only bucket is 403 `forbidden`. Other buckets are served exactly as before.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus

_lock = threading.Lock()
_installed = False
_denied: dict[str, set[str]] = {}
_read_only: set[str] = set()


def _install() -> None:
    global _installed
    with _lock:
        if _installed:
            return
        from gcp_storage_emulator import server as emulator_server
        from gcp_storage_emulator.handlers import buckets, objects

        original_test, original_insert = buckets.test_iam_permissions, objects.insert

        def test_iam_permissions(request, response, storage, *args, **kwargs):
            name = request.params.get("bucket_name")
            original_test(request, response, storage, *args, **kwargs)
            denied = _denied.get(name)
            if denied and response.status == HTTPStatus.OK:
                asked = request.query.get("permissions") or []
                response.json({"kind": "storage#testIamPermissionsResponse",
                               "permissions": [p for p in asked if p not in denied]})

        def insert(request, response, storage, *args, **kwargs):
            name = request.params.get("bucket_name")
            if name in _read_only:
                response.status = HTTPStatus.FORBIDDEN
                message = "caller does not have storage.objects.create access to the Google Cloud Storage object."
                response.json({"error": {"code": 403, "message": message,
                                         "errors": [{"reason": "forbidden", "message": message, "domain": "global"}]}})
                return None
            return original_insert(request, response, storage, *args, **kwargs)

        buckets.test_iam_permissions, objects.insert = test_iam_permissions, insert
        for _, handlers in emulator_server.HANDLERS:
            for method, handler in list(handlers.items()):
                if handler is original_test:
                    handlers[method] = test_iam_permissions
                elif handler is original_insert:
                    handlers[method] = insert
        _installed = True


@contextmanager
def bucket_faults(name: str, *, denied: set[str] | None = None, read_only: bool = False) -> Iterator[None]:
    """Within the block, bucket `name` lacks `denied` permissions and/or refuses uploads."""
    _install()
    with _lock:
        _denied[name] = set(denied or ())
        if read_only:
            _read_only.add(name)
    try:
        yield
    finally:
        with _lock:
            _denied.pop(name, None)
            _read_only.discard(name)
