"""One-time set-up of the Prefect objects prefect.yaml's deployments refer to.

    python deployments/setup.py local
        the process work pool 'sftflow-local' (sft_pipeline/local and the other */local deployments)

    python deployments/setup.py gcp --project P --bucket gs://B --image IMAGE [--region R]
                                    [--pool-type cloud-run-v2|vertex-ai] [--service-account-file KEY.json]
        the work pool 'sftflow-gcp', the GcpCredentials block 'sftflow-gcp' (from a key file's *path*,
        or application-default credentials when no file is given) and the Prefect variables
        sftflow_project / sftflow_region / sftflow_bucket / sftflow_image that sft_pipeline/gcp reads.

Both are idempotent (an existing pool is kept; the block and variables are updated). They talk to the
server PREFECT_API_URL names and refuse to run without one: a pool made on a temporary server
would vanish with it. No credential is written into prefect.yaml or printed.
"""

from __future__ import annotations

import argparse
import sys

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
    bucket = args.bucket if args.bucket.startswith("gs://") else f"gs://{args.bucket}"
    values = {"sftflow_project": args.project, "sftflow_region": args.region, "sftflow_bucket": bucket,
              "sftflow_image": args.image}
    for name, value in values.items():
        Variable.set(name, value, overwrite=True)
    source = "key file path" if args.service_account_file else "application-default credentials"
    print(f"GcpCredentials block '{args.block}' saved ({source}) on {url}")
    print(f"work pool '{args.pool}' ({args.pool_type}) {'created' if created else 'already there'}")
    print("variables: " + ", ".join(f"{k}={v}" for k, v in values.items()))
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
    gp.set_defaults(func=setup_gcp)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
