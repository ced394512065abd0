"""Cold vs cached `sftflow pipeline`: wall times, their ratio, and the model/tuning work the rerun did.

    python benchmarks/pipeline_cache.py [--backend vertex|local|both] [--samples 50] ...

Each backend gets a fresh local_root (so a fresh Prefect result store: the cache records live in
<local_root>/prefect-results) and runs `sftflow pipeline` twice with the same inputs, as the user
would, each run a new process talking to one local `prefect server` started here (no ~11 s
ephemeral-server start per process). A third, cached run without that server (ephemeral mode)
is timed too, since that is what a plain `sftflow pipeline` costs.

- vertex: against the Vertex-shaped test server (per-request latency, a tuning job that spends
  --job-phases seconds PENDING/RUNNING) and the GCS emulator; the rerun's calls are read from the
  server's request log (generateContent, tuningJobs create/get).
- local: the offline backend; the rerun's work is read from Prefect (evaluate-model / tuning task
  runs that executed rather than being Cached) and from the job directories on disk.

Targets: cached rerun ≤ 15 s (server mode) with zero model and tuning calls, and ≤ 10 % of the
cold run. The ratio is checked on the local backend only: the cold vertex run here lasts as long
as the simulated job (--job-phases, 35 s by default), while a real tuning job takes tens of
minutes, so the real ratio is far smaller than the one printed. Exit status 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deployments.local_server import local_prefect_server  # noqa: E402

SFTFLOW = str(Path(sys.executable).parent / "sftflow")
TOKEN = "bench-token-not-a-secret"


def run_pipeline(args: list[str], env: dict[str, str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([SFTFLOW, "pipeline", *args], env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"sftflow pipeline {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return wall


def executed_tasks(api_url: str) -> dict[str, int]:
    """Task runs of the latest sft_pipeline run (and its subflows) that ran, by name, not Cached."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId,
    )
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        run = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["sft_pipeline"])),
                                    sort=FlowRunSort.START_TIME_DESC, limit=1)[0]
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id])))
        ids = [run.id, *(c.id for c in children)]
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
    out: dict[str, int] = {}
    for t in tasks:
        if t.state and t.state.name != "Cached":
            name = t.name.rsplit("-", 1)[0]
            out[name] = out.get(name, 0) + 1
    return out


def bench_vertex(a, server, tmp: Path) -> dict:
    from gcp_storage_emulator.server import create_server

    from deployments.local_server import free_port
    from sftflow.data.samples import sample_paths
    from tests.servers.vertex_server import VertexTestServer

    phases = tuple(float(x) for x in a.job_phases.split(","))
    gport = free_port()
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    gcs = create_server("127.0.0.1", gport, in_memory=True, default_bucket=bucket)
    gcs.start()
    # the server checks tuning datasets in the emulator, as Vertex checks them in GCS
    vertex = VertexTestServer(latency_s=a.latency, job_phases=phases, gcs_url=f"http://127.0.0.1:{gport}",
                              require_token=TOKEN).start()
    try:
        sp = sample_paths()
        root = tmp / "vertex-root"
        args = ["--backend", "vertex", "--project", vertex.project, "--region", vertex.location,
                "--bucket", f"gs://{bucket}", "--local-root", str(root), "--run-name", "bench",
                "--train", sp["train"], "--val", sp["val"], "--test", sp["test"],
                "--samples", str(a.samples), "--poll-interval", "1"]
        env = {**server.env, "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{gport}",
               "SFTFLOW_VERTEX_BASE_URL": vertex.base_url, "SFTFLOW_VERTEX_ACCESS_TOKEN": TOKEN}
        env.pop("PREFECT_RESULTS_LOCAL_STORAGE_PATH", None)

        def calls() -> dict[str, int]:
            return {"generateContent": vertex.count("POST", ":generateContent"),
                    "tuningJobs create": vertex.count("POST", "/tuningJobs") - vertex.count("POST", ":cancel"),
                    "tuningJobs get": vertex.count("GET", "/tuningJobs/")}

        cold = run_pipeline(args, env, tmp)
        before = calls()
        cached = run_pipeline(args, env, tmp)
        rerun_calls = {k: v - before[k] for k, v in calls().items()}
        eph = ephemeral_rerun(args, env, tmp, "vertex") if a.ephemeral else None
        return {"backend": "vertex", "cold": cold, "cached": cached, "ephemeral": eph, "rerun": rerun_calls,
                "cold_calls": before}
    finally:
        vertex.stop()
        gcs.stop()


def ephemeral_rerun(args: list[str], env: dict, tmp: Path, name: str) -> float:
    """The cached rerun again without a server: each process starts Prefect's temporary API."""
    eph_env = {k: v for k, v in env.items() if k not in ("PREFECT_API_URL", "PREFECT_UI_API_URL")}
    eph_env["PREFECT_HOME"] = str(tmp / f"ephemeral-home-{name}")
    return run_pipeline(args, eph_env, tmp)


def bench_local(a, server, tmp: Path) -> dict:
    root = tmp / "local-root"
    args = ["--local-root", str(root), "--run-name", "bench", "--samples", str(a.samples),
            "--set", f"local_train_budget_s={a.train_budget}"]
    env = {k: v for k, v in server.env.items() if k != "PREFECT_RESULTS_LOCAL_STORAGE_PATH"}
    jobs = root / "work" / "jobs"

    def n_jobs() -> int:
        return len(list(jobs.iterdir())) if jobs.exists() else 0

    cold = run_pipeline(args, env, tmp)
    cold_tasks = executed_tasks(server.url)
    before = n_jobs()
    cached = run_pipeline(args, env, tmp)
    rerun = executed_tasks(server.url)
    rerun_work = {"tuning jobs started": n_jobs() - before,
                  "evaluate-model executed": rerun.get("evaluate-model", 0),
                  "submit-tuning-job executed": rerun.get("submit-tuning-job", 0)}
    eph = ephemeral_rerun(args, env, tmp, "local") if a.ephemeral else None
    return {"backend": "local", "cold": cold, "cached": cached, "ephemeral": eph, "rerun": rerun_work,
            "cold_calls": {"evaluate-model executed": cold_tasks.get("evaluate-model", 0),
                           "tuning jobs started": before}}


def report(r: dict) -> bool:
    ratio = r["cached"] / r["cold"]
    # The ratio target binds where the cold run's cost is real work (local training and inference);
    # a vertex cold run here lasts as long as the simulated job (--job-phases), so only print it.
    ratio_ok = ratio <= 0.10 or r["backend"] == "vertex"
    ok = r["cached"] <= 15.0 and ratio_ok and not any(r["rerun"].values())
    print(f"[{r['backend']}] cold run:            {r['cold']:7.1f} s   (work: {r['cold_calls']})")
    print(f"[{r['backend']}] cached rerun:        {r['cached']:7.1f} s   (server mode)")
    if r["ephemeral"] is not None:
        print(f"[{r['backend']}] cached rerun:        {r['ephemeral']:7.1f} s   (ephemeral mode, no server)")
    print(f"[{r['backend']}] cached / cold:       {100 * ratio:7.1f} %")
    print(f"[{r['backend']}] rerun model/tuning work: {r['rerun']}")
    what = "≤ 15 s, no calls; ratio informative only" if r["backend"] == "vertex" else "≤ 15 s, ≤ 10 %, no calls"
    print(f"[{r['backend']}] targets ({what}): {'met' if ok else 'NOT met'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=["vertex", "local", "both"], default="both")
    p.add_argument("--samples", type=int, default=50, help="test examples per evaluation")
    p.add_argument("--latency", type=float, default=0.25, help="vertex: seconds per test-server request")
    p.add_argument("--job-phases", default="5,30", help="vertex: seconds the job is PENDING,RUNNING")
    p.add_argument("--train-budget", type=float, default=60.0, help="local: training budget in seconds")
    p.add_argument("--no-ephemeral", dest="ephemeral", action="store_false",
                   help="skip the cached rerun without a server")
    a = p.parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    print(f"pipeline cache benchmark: samples={a.samples}, {os.cpu_count()} CPU(s); one process per run, "
          "each a client of one local prefect server")
    ok = True
    with tempfile.TemporaryDirectory(prefix="sftflow-bench-") as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        with local_prefect_server(tmp / "prefect-home") as server:
            print(f"prefect server healthy after {time.perf_counter() - t0:.1f} s ({server.url})")
            if a.backend in ("vertex", "both"):
                ok &= report(bench_vertex(a, server, tmp))
            if a.backend in ("local", "both"):
                ok &= report(bench_local(a, server, tmp))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
