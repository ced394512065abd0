"""Cloud Storage checks: the bucket exists, the credentials hold the object permissions a run needs
(`testIamPermissions`, which any caller may ask: https://cloud.google.com/storage/docs/json_api/v1/buckets/testIamPermissions),
and a probe object can really be created and removed. Every call bounded, none retried (`net`)."""

from __future__ import annotations

import uuid

from sftflow.preflight import google_error, net
from sftflow.preflight.identity import Identity
from sftflow.preflight.problem import Finding, Problem

#: What a run does in the bucket (roles/storage.objectAdmin grants all of them:
#: https://cloud.google.com/storage/docs/access-control/iam-roles).
BUCKET_PERMISSIONS = ("storage.objects.create", "storage.objects.get", "storage.objects.list",
                      "storage.objects.delete")
PROBE_FOLDER = ".sftflow-doctor"


def split(root: str) -> tuple[str, str]:
    """gs://bucket[/prefix] → (bucket, prefix without slashes)."""
    rest = root[5:] if root.startswith("gs://") else root
    bucket, _, prefix = rest.partition("/")
    return bucket, prefix.strip("/")


def grant_fix(bucket: str, identity: Identity) -> str:
    return (f"grant roles/storage.objectAdmin on the bucket: gcloud storage buckets add-iam-policy-binding "
            f"gs://{bucket} --member={identity.member} --role=roles/storage.objectAdmin")


def check(settings, identity: Identity) -> tuple[list[Finding], list[Problem]]:
    from google.cloud import storage as gcs

    from sftflow.infra import gcs as gcs_clients

    root = settings.storage_root
    name, prefix = split(root)
    url = net.storage_url()
    client = gcs_clients.client()
    bucket = gcs.Bucket(client, name)

    def unreachable(exc: BaseException) -> tuple[list[Finding], list[Problem]]:
        return [], [Problem(check="network", message=f"cannot reach Cloud Storage at {url} ({net.why(exc)})",
                            fix=net.unreachable_fix(url))]

    try:
        granted = set(bucket.test_iam_permissions(list(BUCKET_PERMISSIONS), timeout=net.CALL_TIMEOUT_S, retry=None))
    except Exception as exc:  # noqa: BLE001 - sorted below
        err = google_error.from_exception(exc)
        if err is None:
            if net.is_network_error(exc):
                return unreachable(exc)
            raise
        if err.code == 404:
            return [], [Problem(check="bucket", message=f"bucket gs://{name} does not exist", fix=(
                f"gcloud storage buckets create gs://{name} --project {settings.project} --location {settings.region}"
                if settings.region != "global" else f"gcloud storage buckets create gs://{name} --project "
                f"{settings.project}"))]
        if google_error.is_transient(err):
            return [Finding(check="bucket", kind="note", text=f"gs://{name}: not decided ({err.brief()})")], []
        return [], [Problem(check="bucket", message=f"{identity.who} cannot use bucket gs://{name} ({err.brief()})",
                            fix=grant_fix(name, identity))]
    missing = [p for p in BUCKET_PERMISSIONS if p not in granted]
    if missing:
        return [], [Problem(check="roles", message=f"{identity.who} lacks {', '.join(missing)} on gs://{name}",
                            fix=grant_fix(name, identity))]
    probe = bucket.blob("/".join(x for x in (prefix, PROBE_FOLDER, uuid.uuid4().hex) if x))
    try:
        probe.upload_from_string(b"", timeout=net.CALL_TIMEOUT_S, retry=None, if_generation_match=0)
        probe.delete(timeout=net.CALL_TIMEOUT_S, retry=None)
    except Exception as exc:  # noqa: BLE001 - sorted below
        err = google_error.from_exception(exc)
        if err is None:
            if net.is_network_error(exc):
                return unreachable(exc)
            raise
        return [], [Problem(check="bucket", message=f"{identity.who} cannot write to {root} (a probe object: "
                            f"{err.brief()})", fix=grant_fix(name, identity))]
    return [Finding(check="bucket", kind="ok", text=f"{root} exists and is writable (a probe object created and "
                    "removed)")], []
