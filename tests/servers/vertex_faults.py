"""Fault switches of one VertexTestServer (`server.faults`) for the preflight tests, in Google's words.

- `disabled_api`: every Vertex AI call answers 403 with an `ErrorInfo` whose reason is SERVICE_DISABLED,
  as a project without the API enabled does (https://cloud.google.com/apis/design/errors#error_info).
- `denied`: IAM permissions the caller lacks: a route that needs one answers 403 PERMISSION_DENIED
  (reason IAM_PERMISSION_DENIED), and Cloud Resource Manager's `projects.testIamPermissions` leaves them out.
- `tuning_unavailable`: tuning-job routes answer 400 FAILED_PRECONDITION, as a region without supervised
  tuning (Google documents no exact answer for it; the doctor treats any 400/404 there alike).
- `resource_manager_disabled`: `projects.testIamPermissions` answers SERVICE_DISABLED for
  cloudresourcemanager.googleapis.com.

The server also answers Resource Manager's `POST /v1/projects/{P}:testIamPermissions`
(https://cloud.google.com/resource-manager/reference/rest/v1/projects/testIamPermissions) for its own project:
the asked permissions minus `denied`; another project → 403, as Google answers a project the caller cannot see.
A model not offered in the region is the server's `base_models` (countTokens answers 404).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
_RESOURCE_MANAGER = re.compile(r"^/v1/projects/([^/:]+):testIamPermissions$")
#: (method, path suffix pattern under projects/P/locations/L/) → the IAM permission Vertex AI checks.
_PERMISSIONS = (
    ("POST", r"publishers/google/models/[^/:]+:(countTokens|generateContent)", "aiplatform.endpoints.predict"),
    ("POST", r"endpoints/[^/:]+:generateContent", "aiplatform.endpoints.predict"),
    ("GET", r"tuningJobs", "aiplatform.tuningJobs.list"),
    ("POST", r"tuningJobs", "aiplatform.tuningJobs.create"),
    ("GET", r"tuningJobs/[^/:]+", "aiplatform.tuningJobs.get"),
    ("POST", r"tuningJobs/[^/:]+:cancel", "aiplatform.tuningJobs.cancel"),
)


def _error(code: int, status: str, message: str, reason: str | None = None, domain: str = "googleapis.com",
           metadata: dict[str, str] | None = None) -> tuple[int, dict]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if reason:
        error["details"] = [{"@type": _ERROR_INFO, "reason": reason, "domain": domain, "metadata": metadata or {}}]
    return code, {"error": error}


def service_disabled(service: str, title: str, project: str) -> tuple[int, dict]:
    return _error(403, "PERMISSION_DENIED",
                  f"{title} has not been used in project {project} before or it is disabled. Enable it by visiting "
                  f"https://console.developers.google.com/apis/api/{service}/overview?project={project} then retry.",
                  "SERVICE_DISABLED", metadata={"service": service, "consumer": f"projects/{project}"})


@dataclass
class VertexFaults:
    disabled_api: bool = False
    denied: set[str] = field(default_factory=set)
    tuning_unavailable: bool = False
    resource_manager_disabled: bool = False

    def intercept(self, server, method: str, path: str, body: Any) -> tuple[int, dict] | None:
        """An answer for `method path` that replaces the server's own, or None to let the server answer."""
        rm = _RESOURCE_MANAGER.match(path)
        if rm:
            return self._test_iam_permissions(server, rm.group(1), body)
        m = re.match(r"^/(?:v1|v1beta1)/projects/([^/]+)/locations/([^/]+)/(.*)$", path)
        if not m:
            return None
        project, _, rest = m.groups()
        if self.disabled_api:
            return service_disabled("aiplatform.googleapis.com", "Vertex AI API", project)
        for meth, pattern, permission in _PERMISSIONS:
            if meth == method and re.fullmatch(pattern, rest):
                if permission in self.denied:
                    resource = path.split("/", 2)[2]
                    return _error(403, "PERMISSION_DENIED",
                                  f"Permission '{permission}' denied on resource '//aiplatform.googleapis.com/"
                                  f"{resource}' (or it may not exist).", "IAM_PERMISSION_DENIED",
                                  "aiplatform.googleapis.com", {"permission": permission, "resource": resource})
                if self.tuning_unavailable and permission.startswith("aiplatform.tuningJobs."):
                    return _error(400, "FAILED_PRECONDITION", f"Supervised tuning is not supported in location "
                                  f"{server.location}.")
        return None

    def _test_iam_permissions(self, server, project: str, body: Any) -> tuple[int, dict]:
        if self.resource_manager_disabled:
            return service_disabled("cloudresourcemanager.googleapis.com", "Cloud Resource Manager API", project)
        if project != server.project:
            return _error(403, "PERMISSION_DENIED", "The caller does not have permission")
        asked = body.get("permissions") if isinstance(body, dict) else None
        if not isinstance(asked, list) or not all(isinstance(p, str) for p in asked):
            return _error(400, "INVALID_ARGUMENT", "Invalid JSON payload received. 'permissions': a list of strings.")
        granted = [p for p in asked if p not in self.denied]
        return 200, ({"permissions": granted} if granted else {})
