"""Google's error answers as one shape: code, status, message and the `ErrorInfo` reason.

Google APIs answer `{"error": {"code", "message", "status", "details": [...]}}`; a disabled API is
403 with an `ErrorInfo` detail whose `reason` is `SERVICE_DISABLED` and whose `metadata` names the
`service` and the `consumer` project (https://cloud.google.com/apis/design/errors#error_info).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"


@dataclass(frozen=True)
class ApiError:
    code: int
    status: str = ""
    message: str = ""
    reason: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def brief(self) -> str:
        label = f"{self.code} {self.reason or self.status}".strip()
        text = " ".join(self.message.split())
        text = re.split(r"(?<=\.) ", text, maxsplit=1)[0]  # Google's first sentence says it; the rest is advice
        return f"HTTP {label}: {text[:200]}" if text else f"HTTP {label}"


def from_payload(code: int, payload: Any) -> ApiError:
    """From an HTTP status and the decoded JSON body (any shape)."""
    err = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(err, dict):
        return ApiError(code, message=str(payload)[:200] if payload else "")
    reason, metadata = None, {}
    for detail in err.get("details") or []:
        if isinstance(detail, dict) and detail.get("@type") == ERROR_INFO:
            reason, metadata = detail.get("reason"), dict(detail.get("metadata") or {})
            break
    if reason is None:  # Cloud Storage's JSON API: errors[].reason
        for e in err.get("errors") or []:
            if isinstance(e, dict) and e.get("reason"):
                reason = e["reason"]
                break
    return ApiError(int(err.get("code") or code), str(err.get("status") or ""), str(err.get("message") or ""),
                    reason, metadata)


def from_exception(exc: BaseException) -> ApiError | None:
    """From a google-genai APIError or a google-api-core GoogleAPICallError; None for anything else."""
    from google.api_core import exceptions as gexc
    from google.genai import errors as genai_errors

    if isinstance(exc, genai_errors.APIError):
        parsed = from_payload(int(exc.code or 0), exc.details)
        return ApiError(int(exc.code or 0), parsed.status or str(exc.status or ""),
                        parsed.message or str(exc.message or ""), parsed.reason, parsed.metadata)
    if isinstance(exc, gexc.GoogleAPICallError):
        code = int(exc.code or 0)
        response = getattr(exc, "response", None)
        try:
            payload = response.json() if response is not None else None
        except ValueError:
            payload = None
        parsed = from_payload(code, payload) if payload else None
        reason = (parsed.reason if parsed else None) or getattr(exc, "reason", None)
        return ApiError(code, parsed.status if parsed else "", (parsed.message if parsed else "") or exc.message or "",
                        reason, parsed.metadata if parsed else {})
    return None


def is_transient(err: ApiError) -> bool:
    return err.code in (408, 429) or err.code >= 500
