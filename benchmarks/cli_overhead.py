"""What a `sftflow` command costs on Prefect's temporary server vs a reused `sftflow server`, side by side.

    python benchmarks/cli_overhead.py [--samples 50] [--train-budget 60]

One fresh storage root, the local (offline) backend, every command a new process as a user runs it:
`sftflow server start` (timed once), a cold `sftflow pipeline`, then fully cached reruns of
`pipeline`, `prepare` and `compare base tuned` on the reused server and again with
`--set prefect_server=ephemeral` (each process starts Prefect's temporary server). The temporary
server's first command in a fresh PREFECT_HOME also creates its database, so `prepare` runs twice
there and the second (what a returning user sees) is compared. Every server-mode command must print
`watch: URL` whose flow run the server's API reports COMPLETED.

Targets (issue 16): cached pipeline rerun on the server ≤ 10 % of the cold run; cached `prepare` on
the server ≤ 1/3 of the same rerun on the temporary server. Exit status 1 if one is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sftflow.infra import prefect_server  # noqa: E402

_SCRIPT = Path(sys.executable).parent / "sftflow"
SFTFLOW = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "sftflow.cli.main"]
WATCH = re.compile(r"^watch: (\S+)/runs/flow-run/([0-9a-f-]{36})$", re.M)


def timed(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run([*SFTFLOW, *args], env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"sftflow {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return wall, proc


def check_watched(proc: subprocess.CompletedProcess, api_url: str) -> str:
    """The run the command announced with `watch:` is in the server's database and COMPLETED."""
    m = WATCH.search(proc.stderr)
    if not m:
        sys.exit(f"no 'watch:' line in a server-mode command's output:\n{proc.stderr[-2000:]}")
    body = json.dumps({"flow_runs": {"id": {"any_": [m.group(2)]}}}).encode()
    req = urllib.request.Request(f"{api_url}/flow_runs/filter", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        runs = json.loads(r.read())
    if not runs or runs[0]["state_type"] != "COMPLETED":
        sys.exit(f"flow run {m.group(2)} not COMPLETED on the server: {runs}")
    return m.group(0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=50, help="test examples per evaluation")
    p.add_argument("--train-budget", type=float, default=60.0, help="local training budget in seconds")
    a = p.parse_args(argv)
    load0 = os.getloadavg()
    print(f"cli overhead benchmark: local backend, samples={a.samples}, train budget {a.train_budget:g} s, "
          f"{os.cpu_count()} CPU(s), load average {load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f}")
    ok = True
    with tempfile.TemporaryDirectory(prefix="sftflow-cli-bench-") as d:
        tmp = Path(d)
        root = tmp / "root"
        env = {k: v for k, v in os.environ.items()
               if k not in ("PREFECT_API_URL", "PREFECT_UI_API_URL", "PREFECT_RESULTS_LOCAL_STORAGE_PATH",
                            "PREFECT_PROFILE", "PREFECT_PROFILES_PATH")}
        env.update({"PREFECT_HOME": str(tmp / "client-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
        # Prefect's default (20 s) is too short for the temporary server on a loaded 2-core machine
        env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
        common = ["--local-root", str(root), "--run-name", "bench"]
        pipeline = ["pipeline", *common, "--samples", str(a.samples),
                    "--set", f"local_train_budget_s={a.train_budget}"]
        reruns = {"pipeline": pipeline, "prepare": ["prepare", *common], "compare": ["compare", "base", "tuned", *common]}
        eph = ["--set", "prefect_server=ephemeral"]
        t = {}
        try:
            t["server start"], out = timed(["server", "start", "--local-root", str(root)], env, tmp)
            api_url = prefect_server.read_record(prefect_server.server_home(root)).api_url
            print(out.stdout.strip().splitlines()[0])
            t["pipeline cold"], out = timed(pipeline, env, tmp)
            print(f"cold pipeline: {t['pipeline cold']:.1f} s, {check_watched(out, api_url)}")
            for name, args in reruns.items():
                t[f"{name} server"], out = timed(args, env, tmp)
                check_watched(out, api_url)
            t["prepare ephemeral first"], _ = timed(reruns["prepare"] + eph, env, tmp)
            for name, args in reruns.items():
                t[f"{name} ephemeral"], out = timed(args + eph, env, tmp)
                if "watch:" in out.stderr:
                    sys.exit(f"{name} with prefect_server=ephemeral printed a watch: line")
        finally:
            t0 = time.perf_counter()
            subprocess.run([*SFTFLOW, "server", "stop", "--local-root", str(root)], env=env, cwd=tmp,
                           capture_output=True, timeout=120)
            t["server stop"] = time.perf_counter() - t0

    print(f"\n{'command (fully cached rerun)':32} {'temporary server':>17} {'reused server':>14} {'ratio':>7}")
    for name in reruns:
        e, s = t[f"{name} ephemeral"], t[f"{name} server"]
        print(f"sftflow {name:24} {e:15.1f} s {s:12.1f} s {s / e:7.2f}")
    print(f"(temporary server, first command in a fresh PREFECT_HOME: prepare {t['prepare ephemeral first']:.1f} s)")
    print(f"one-time: server start {t['server start']:.1f} s, server stop {t['server stop']:.1f} s")
    pipe_ratio = t["pipeline server"] / t["pipeline cold"]
    prep_ratio = t["prepare server"] / t["prepare ephemeral"]
    print(f"pipeline: cold {t['pipeline cold']:.1f} s, cached on the server {t['pipeline server']:.1f} s "
          f"= {100 * pipe_ratio:.1f} % (target ≤ 10 %: {'met' if pipe_ratio <= 0.10 else 'NOT met'})")
    print(f"prepare: cached on the server / on a temporary server = {prep_ratio:.2f} "
          f"(target ≤ 0.33: {'met' if prep_ratio <= 1 / 3 else 'NOT met'})")
    load1 = os.getloadavg()
    print(f"load average at the end {load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f}")
    ok = pipe_ratio <= 0.10 and prep_ratio <= 1 / 3
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
