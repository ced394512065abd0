"""One-time set-up of the Prefect objects prefect.yaml's deployments refer to.

    python deployments/setup.py local
        the process work pool 'sftflow-local' (sft_pipeline/local and the other */local deployments)

    python deployments/setup.py gcp --project P --bucket gs://B --image IMAGE [--region R]
                                    [--pool-type cloud-run-v2|vertex-ai] [--service-account-file KEY.json]
                                    [--service-account EMAIL] [--job-api-url URL]
                                    [--prefect-api-key-secret SECRET[:VERSION]]
        the work pool 'sftflow-gcp', the GcpCredentials block 'sftflow-gcp' (from a key file's *path*,
        or application-default credentials when no file is given) and the Prefect variables
        sftflow_project / sftflow_region / sftflow_bucket / sftflow_image / sftflow_service_account /
        sftflow_api_url / sftflow_prefect_api_key_secret that sft_pipeline/gcp reads. The job runs as the
        service account (default: the key file's) and reports to the Prefect API at --job-api-url (default:
        PREFECT_API_URL), which must not be a loopback address: the job's container could not reach it.
        With Prefect Cloud the job needs an API key: --prefect-api-key-secret names the Secret Manager secret
        holding it, which a Cloud Run job reads into PREFECT_API_KEY (the key itself is never written to
        Prefect or prefect.yaml, and the worker's own key is then kept out of the job's environment).

Both are idempotent (an existing pool is kept; the block and variables are updated). They talk to the
server PREFECT_API_URL names and refuse to run without one: a pool made on a temporary server
would vanish with it. No credential is written into prefect.yaml or printed.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from urllib.parse import urlsplit

LOCAL_POOL = "sftflow-local"
GCP_POOL = "sftflow-gcp"
GCP_BLOCK = "sftflow-gcp"
WORKER_TYPES = ("cloud-run-v2", "vertex-ai")


def _require_server() -> str:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise SystemExit(
            "setup: error: PREFECT_API_URL is not set. Start a server (`prefect server start`) and run "
            "`prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api` (or export it) first."
        )
    return url


def is_loopback_url(url: str) -> bool:
    """True for a URL whose host is this machine only: localhost, 127.0.0.0/8, ::1 (or the unspecified 0.0.0.0 / ::)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified


def job_api_url(args: argparse.Namespace, server_url: str) -> str:
    """The Prefect API the job's container reports to; a loopback address ends the set-up with one line."""
    url = args.job_api_url or server_url
    if is_loopback_url(url):
        source = "--job-api-url" if args.job_api_url else "PREFECT_API_URL"
        raise SystemExit(
            f"setup: error: {source} is {url}, a loopback address that the Cloud Run / Vertex AI job cannot reach: "
            "the job needs a Prefect API its container can reach (Prefect Cloud, or your server on a reachable "
            "address); pass it as --job-api-url URL")
    return url


def job_service_account(args: argparse.Namespace) -> str:
    """The account the job runs as: --service-account, else the key file's client_email."""
    if args.service_account:
        return args.service_account
    if args.service_account_file:
        try:
            with open(args.service_account_file, encoding="utf-8") as f:
                email = json.load(f).get("client_email")
        except (OSError, ValueError) as exc:
            raise SystemExit(f"setup: error: --service-account-file {args.service_account_file}: {exc}") from None
        if email:
            return email
    raise SystemExit(
        "setup: error: --service-account EMAIL is needed: the job runs as that service account (grant it the roles "
        "in README 'On Vertex AI with a real project'); application-default user credentials name none")


#: How Prefect API keys begin (user keys pnu_, service-account keys pnb_): a value given where a secret's *name*
#: belongs is refused, so that no key lands in a Prefect variable (https://docs.prefect.io/v3/manage/cloud/manage-users/api-keys).
_KEY_PREFIXES = ("pnu_", "pnb_")


def is_prefect_cloud_url(url: str) -> bool:
    """True for Prefect Cloud's API (api.prefect.cloud), which needs PREFECT_API_KEY."""
    host = (urlsplit(url).hostname or "").lower()
    return host == "prefect.cloud" or host.endswith(".prefect.cloud")


def api_key_secret(args: argparse.Namespace, api_url: str) -> dict[str, str] | None:
    """The Secret Manager secret the Cloud Run job reads PREFECT_API_KEY from ({secret, version}, prefect-gcp's
    `prefect_api_key_secret` job variable), or None. Refuses a key given in place of a name, and a Prefect Cloud
    job API on a Cloud Run pool without one (the worker would hand the job its own key in plain text)."""
    value = getattr(args, "prefect_api_key_secret", None)
    if not value:
        if is_prefect_cloud_url(api_url) and args.pool_type == "cloud-run-v2":
            raise SystemExit(
                f"setup: error: the job reports to Prefect Cloud ({api_url}) and needs an API key: pass "
                "--prefect-api-key-secret SECRET, a Secret Manager secret holding it (grant the job's service account "
                "roles/secretmanager.secretAccessor on it); without it the worker's own key would be written into "
                "the job's environment in plain text")
        return None
    if value.startswith(_KEY_PREFIXES):
        raise SystemExit("setup: error: --prefect-api-key-secret takes the *name* of a Secret Manager secret that "
                         "holds the key (e.g. prefect-api-key), not the key: nothing was saved")
    secret, _, version = value.partition(":")
    return {"secret": secret, "version": version or "latest"}


def gcp_variables(args: argparse.Namespace, account: str, api_url: str) -> dict[str, object]:
    """The Prefect variables prefect.yaml's sft_pipeline/gcp reads ({{ prefect.variables.NAME }})."""
    bucket = args.bucket if args.bucket.startswith("gs://") else f"gs://{args.bucket}"
    return {"sftflow_project": args.project, "sftflow_region": args.region, "sftflow_bucket": bucket,
            "sftflow_image": args.image, "sftflow_service_account": account, "sftflow_api_url": api_url,
            # always saved, null without a secret: prefect deploy resolves a missing variable to "", which the
            # Cloud Run worker would refuse as a secret
            "sftflow_prefect_api_key_secret": api_key_secret(args, api_url)}


def _base_job_template(pool_type: str) -> dict:
    if pool_type == "process":
        from prefect.workers.process import ProcessWorker

        return ProcessWorker.get_default_base_job_template()
    if pool_type == "cloud-run-v2":
        from prefect_gcp.workers.cloud_run_v2 import CloudRunWorkerV2

        return CloudRunWorkerV2.get_default_base_job_template()
    from prefect_gcp.workers.vertex import VertexAIWorker

    return VertexAIWorker.get_default_base_job_template()


def ensure_pool(name: str, pool_type: str) -> bool:
    """Create the work pool unless one of that name exists; True when created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(
                WorkPoolCreate(name=name, type=pool_type, base_job_template=_base_job_template(pool_type))
            )
            return True
    if pool.type != pool_type:
        raise SystemExit(
            f"setup: error: work pool '{name}' exists with type '{pool.type}', not '{pool_type}'; "
            f"delete it (`prefect work-pool delete {name}`) or pick another --pool-type"
        )
    return False


def setup_local(args: argparse.Namespace) -> None:
    url = _require_server()
    created = ensure_pool(args.pool, "process")
    print(f"work pool '{args.pool}' (process) {'created' if created else 'already there'} on {url}")
    print(f"next (from the repository root): prefect --no-prompt deploy --name local; "
          f"prefect worker start --pool {args.pool}")


def setup_gcp(args: argparse.Namespace) -> None:
    from prefect.variables import Variable
    from prefect_gcp import GcpCredentials

    url = _require_server()
    api_url = job_api_url(args, url)  # before anything is saved: a set-up that cannot work changes nothing
    account = job_service_account(args)
    api_key_secret(args, api_url)  # likewise
    try:
        if args.service_account_file:
            # The block stores the key file's path, not its content: the file must exist on the
            # worker's machine (the worker uses it to start jobs; the jobs run as their service account).
            creds = GcpCredentials(service_account_file=args.service_account_file, project=args.project)
        else:
            creds = GcpCredentials(project=args.project)  # application-default credentials at use time
        creds.save(args.block, overwrite=True)
    except Exception as exc:  # noqa: BLE001 - one readable line instead of a pydantic/google-auth trace
        raise SystemExit(f"setup: error: GcpCredentials block '{args.block}': {exc}") from None
    created = ensure_pool(args.pool, args.pool_type)
    values = gcp_variables(args, account, api_url)
    for name, value in values.items():
        Variable.set(name, value, overwrite=True)
    source = "key file path" if args.service_account_file else "application-default credentials"
    print(f"GcpCredentials block '{args.block}' saved ({source}) on {url}")
    print(f"work pool '{args.pool}' ({args.pool_type}) {'created' if created else 'already there'}")
    print("variables: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    if values["sftflow_prefect_api_key_secret"] and args.pool_type == "vertex-ai":
        print("note: a Vertex AI custom job cannot read a Secret Manager secret into its environment: "
              "--prefect-api-key-secret applies to Cloud Run pools only (README: Prefect Cloud)")
    print(f"next: prefect --no-prompt deploy --name sft_pipeline/gcp; prefect worker start --pool {args.pool}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deployments/setup.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    lp = sub.add_parser("local", help=f"create the process work pool '{LOCAL_POOL}'")
    lp.add_argument("--pool", default=LOCAL_POOL)
    lp.set_defaults(func=setup_local)
    gp = sub.add_parser("gcp", help=f"create the '{GCP_POOL}' pool, credentials block and variables")
    gp.add_argument("--project", required=True, help="Google Cloud project id")
    gp.add_argument("--bucket", required=True, help="gs://bucket[/prefix] for datasets and results")
    gp.add_argument("--image", required=True, help="container image holding this project (deployments/Dockerfile)")
    gp.add_argument("--region", default="us-central1")
    gp.add_argument("--pool-type", choices=WORKER_TYPES, default="cloud-run-v2")
    gp.add_argument("--pool", default=GCP_POOL)
    gp.add_argument("--block", default=GCP_BLOCK, help="GcpCredentials block name")
    gp.add_argument("--service-account-file", help="service-account key file (default: application-default credentials)")
    gp.add_argument("--service-account", help="email of the service account the job runs as (service_account_name "
                    "of both pool types; default: the key file's client_email); grant it the README's roles")
    gp.add_argument("--job-api-url", help="the Prefect API URL the job's container reports to (default: "
                    "PREFECT_API_URL; a loopback address is refused)")
    gp.add_argument("--prefect-api-key-secret", metavar="SECRET[:VERSION]",
                    help="Prefect Cloud: the Secret Manager secret (name, or projects/P/secrets/NAME; version "
                    "default latest) holding the API key the Cloud Run job uses as PREFECT_API_KEY; grant the job's "
                    "service account roles/secretmanager.secretAccessor on it")
    gp.set_defaults(func=setup_gcp)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
