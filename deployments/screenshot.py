"""Open a flow run's page of the Prefect UI in headless Chromium; save a PNG and the rendered DOM.

    python deployments/screenshot.py FLOW_RUN_ID docs/ui-pipeline-run.png [--ui-url http://127.0.0.1:4200]

Used by the UI test (the DOM proves the page rendered the run, not a blank shell) and to make the
README's picture. Needs Debian's `chromium` (apt-get install -y chromium). The server must have been
started with PREFECT_UI_API_URL (or PREFECT_API_URL) naming its own port, else the UI asks :4200.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--window-size=1400,900",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def flow_run_url(ui_url: str, flow_run_id: str) -> str:
    return f"{ui_url.rstrip('/')}/runs/flow-run/{flow_run_id}"


def capture(url: str, png: str | Path, *, budget_ms: int = 15000, timeout_s: float = 90.0) -> str:
    """Render `url`, write the screenshot to `png` and return the DOM after scripts ran."""
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("chromium: not installed (apt-get install -y chromium)")
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sftflow-chromium-") as profile:
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
               f"--screenshot={png}", "--dump-dom", url]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0 or not png.exists():
        raise RuntimeError(f"chromium exit {proc.returncode} for {url}: {proc.stderr.strip()[-800:]}")
    return proc.stdout


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("flow_run_id")
    p.add_argument("png", help="where to write the screenshot")
    p.add_argument("--ui-url", default=os.environ.get("PREFECT_UI_URL", "http://127.0.0.1:4200"),
                   help="the UI's base URL (default $PREFECT_UI_URL or http://127.0.0.1:4200)")
    p.add_argument("--dom", help="also write the rendered DOM (HTML) here")
    p.add_argument("--budget-ms", type=int, default=15000, help="virtual time the page gets to render")
    a = p.parse_args(argv)
    dom = capture(flow_run_url(a.ui_url, a.flow_run_id), a.png, budget_ms=a.budget_ms)
    if a.dom:
        Path(a.dom).write_text(dom)
    print(a.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
