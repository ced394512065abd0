"""`sftflow server start|stop|status`: the local Prefect server every command reuses.

Kept apart from `sftflow.cli.main` (which only dispatches to it): it answers without importing
Prefect, and its lifecycle lives in `sftflow.infra.prefect_server`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from sftflow.cli.config import add_flag
from sftflow.errors import ServerError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "server", help="start/stop/status of a local Prefect server that every command reuses",
        description="A Prefect server kept running in the background (its database under "
        "<local_root>/prefect-server/), so commands skip Prefect's ~11 s temporary-server start and their "
        "runs stay visible in the UI. Commands use it unless PREFECT_API_URL is set or "
        "prefect_server=ephemeral. `status` exits 0 when it runs, 3 when not.")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--port", type=int, help="port to serve on (default 4200 if free, else a free port)")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the server to answer")
    add_flag(p, "--local-root", "local_root")


def run(args: argparse.Namespace) -> int:
    """`sftflow server start|stop|status`: answers without importing Prefect."""
    from sftflow.infra import prefect_server as ps
    from sftflow.config import load_settings

    home = ps.server_home(load_settings(local_root=args.local_root).local_root)
    try:
        if args.action == "start":
            rec, started = ps.start(home, port=args.port, timeout=args.timeout)
            print(f"{'started' if started else 'already running'}: {rec.ui_url} (pid {rec.pid}; runs kept in {home})")
            print("it keeps running in the background until `sftflow server stop`; sftflow commands with this "
                  "storage root use it")
            print(f"for the prefect CLI and deployments: export PREFECT_API_URL={rec.api_url}")
            if (url := os.environ.get("PREFECT_API_URL")) and url != rec.api_url:
                print(f"note: PREFECT_API_URL is set ({url}); commands use that, not this server", file=sys.stderr)
            return 0
        if args.action == "stop":
            rec = ps.stop(home)
            print(f"stopped: {rec.ui_url} (pid {rec.pid})" if rec else "not running")
            return 0
        st = ps.status(home)
        if st.running:
            assert st.record is not None
            up = int(time.time() - st.record.started_at)
            print(f"running: {st.record.ui_url} (pid {st.record.pid}, up {up // 3600}h{up % 3600 // 60:02d}m"
                  f"{up % 60:02d}s; runs kept in {home})")
            return 0
        root = home.parent
        print(f"not running for local root {root} ({st.state}: {st.detail}); `sftflow server start` replaces it"
              if st.detail else f"not running for local root {root} (looked for {home / ps.RECORD})")
        for rec in ps.running_elsewhere(home):
            other = Path(rec.home).parent
            print(f"another sftflow server runs: {rec.ui_url} (pid {rec.pid}) for local root {other}; commands "
                  f"use it from there or with --local-root {other}")
        return 3
    except ServerError as exc:
        print(f"sftflow: error: {exc}", file=sys.stderr)
        return 1
