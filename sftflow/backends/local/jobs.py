"""Local tuning jobs on disk: one directory per job, a detached runner process per job.

Layout of `<work_dir>/jobs/<job-id>/`:
  spec.json        the runner's parameters (LocalTuner.request; its `key` is the job's label) + where
                   outputs go
  status.json      state, pid (+ its start time, against pid reuse), progress, curves; atomic
  checkpoint.pt    adapter + head + optimizer + step, written periodically by the runner (its step:
                   status.json's checkpoint_step); a new job for the same intent may start from a
                   cancelled job's (resume.py: spec.json's `fingerprint` must match)
  cancel.request   present once cancel() was asked
  runner.log       the runner's stdout/stderr
Beside them, `<work_dir>/sentence-cache/<hash>/` holds the extractive trainer's encoded
sentences, shared by every job on the same sentences (see sentence_cache.py).

Like a cloud job, it survives its submitter: `get()` notices a runner that died without
finishing (killed, OOM, reboot) and starts a new one, which resumes from the checkpoint.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sftflow.infra import storage
from sftflow.backends.base import JobState, JobStatus

MAX_RESTARTS = 3
_children: dict[int, subprocess.Popen] = {}  # reaped in is_alive(), so no zombies linger


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_job_id() -> str:
    return f"job-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


# --------------------------------------------------------------------------- files


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def write_json(path: Path, data: dict[str, Any]) -> None:
    storage.write_bytes(str(path), json.dumps(data, indent=1).encode("utf-8"))


def update_status(job_dir: Path, **fields: Any) -> dict[str, Any]:
    st = read_json(job_dir / "status.json")
    st.update(fields, update_time=now_iso())
    write_json(job_dir / "status.json", st)
    return st


# --------------------------------------------------------------------------- processes


def proc_start_time(pid: int) -> str | None:
    """Kernel start time of `pid` (clock ticks since boot) or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # zombie: exited, not yet reaped
        return None
    return fields[19]


def is_alive(pid: int | None, start: str | None) -> bool:
    if not pid:
        return False
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _children.pop(pid, None)
        return False
    if Path("/proc").is_dir():
        now = proc_start_time(pid)
        return now is not None and (start is None or now == start)
    try:  # no /proc (macOS): existence check only
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def start_runner(job_dir: Path) -> int:
    """Launch `python -m sftflow.backends.local.runner JOB_DIR` in its own session."""
    log = open(job_dir / "runner.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sftflow.backends.local.runner", str(job_dir)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True, cwd=os.getcwd(),
    )
    log.close()
    _children[proc.pid] = proc
    return proc.pid


# --------------------------------------------------------------------------- jobs


def create(jobs_root: Path, request: dict[str, Any], extra: dict[str, Any]) -> Path:
    """A new job's folder; `request` is what the runner runs (LocalTuner.request), its `key` the job's label."""
    job_id = new_job_id()
    job_dir = jobs_root / job_id
    job_dir.mkdir(parents=True, exist_ok=False)
    write_json(job_dir / "spec.json", {"job_id": job_id, "spec": request, **extra})
    t = now_iso()
    write_json(job_dir / "status.json", {"state": JobState.PENDING.value, "create_time": t, "update_time": t,
                                         "restarts": 0})
    return job_dir


def launch(job_dir: Path) -> None:
    pid = start_runner(job_dir)
    update_status(job_dir, pid=pid, pid_start=proc_start_time(pid))


def to_status(job_dir: Path) -> JobStatus:
    spec = read_json(job_dir / "spec.json")
    st = read_json(job_dir / "status.json")
    step, total = st.get("step"), st.get("total_steps")
    return JobStatus(
        name=job_dir.name,
        state=JobState(st.get("state", "PENDING")),
        key=spec.get("spec", {}).get("key"),
        progress=(step / total) if step is not None and total else (1.0 if st.get("state") == "SUCCEEDED" else None),
        step=step,
        total_steps=total,
        tuned_model=st.get("tuned_model"),
        endpoint=st.get("endpoint"),
        error=st.get("error"),
        create_time=st.get("create_time"),
        update_time=st.get("update_time"),
        stats=dict(st.get("stats", {}), epoch=st.get("epoch"), phase=st.get("phase"),
                   restarts=st.get("restarts", 0),
                   **{k: st[k] for k in ("resume", "resumed_from") if k in st}),
        metrics={k: [tuple(x) for x in v] for k, v in st.get("metrics", {}).items()},
        checkpoints=list(st.get("checkpoints", [])) if st.get("state") == "SUCCEEDED" else [],
    )


def check(job_dir: Path) -> JobStatus:
    """Current status; a PENDING/RUNNING job whose runner died is resumed (or closed)."""
    st = read_json(job_dir / "status.json")
    if not st:
        raise FileNotFoundError(f"{job_dir}: no such local tuning job")
    state = JobState(st.get("state", "PENDING"))
    if state in (JobState.PENDING, JobState.RUNNING, JobState.CANCELLING) and not is_alive(
        st.get("pid"), st.get("pid_start")
    ):
        st = read_json(job_dir / "status.json")  # the runner may have finished meanwhile
        if JobState(st.get("state")).ended:
            return to_status(job_dir)
        if (job_dir / "cancel.request").exists():
            update_status(job_dir, state=JobState.CANCELLED.value)
        elif st.get("restarts", 0) >= MAX_RESTARTS:
            update_status(job_dir, state=JobState.FAILED.value,
                          error=f"runner died {MAX_RESTARTS + 1} times; see {job_dir / 'runner.log'}")
        else:
            update_status(job_dir, restarts=st.get("restarts", 0) + 1, phase="restarting")
            launch(job_dir)
    return to_status(job_dir)


def request_cancel(job_dir: Path) -> None:
    import signal

    st = read_json(job_dir / "status.json")
    if JobState(st.get("state", "PENDING")).ended:
        return
    (job_dir / "cancel.request").write_text(now_iso())
    pid, start = st.get("pid"), st.get("pid_start")
    if is_alive(pid, start):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    else:
        update_status(job_dir, state=JobState.CANCELLED.value)


def wait(job_dir: Path, timeout_s: float, poll_s: float = 0.5) -> JobStatus:
    """Poll `check` until the job ends (used by tests and benchmarks)."""
    deadline = time.monotonic() + timeout_s
    while True:
        s = check(job_dir)
        if s.state.ended or time.monotonic() > deadline:
            return s
        time.sleep(poll_s)
