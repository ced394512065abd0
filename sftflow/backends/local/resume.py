"""A new local job for an intent whose last job was cancelled starts from that job's checkpoint.

Ctrl-C (or `tuning_timeout`) cancels a local job; its runner saves `checkpoint.pt` at the step it stopped.
When the intent is tuned again (`--resubmit-failed`), the new job copies that checkpoint (and the per-epoch
checkpoints already uploaded) and its runner resumes there, exactly as a restarted runner resumes its own
job — but only when the inputs are provably the same: each job records in spec.json a fingerprint of what
it trains on (base model, training parameters, the content hash of each data file), and the two must be
equal. The training budget is not in the fingerprint: it is wall-clock time summed over restarts, carried
in the checkpoint, so the new job trains for what is left of its own budget (steps replay in a fixed
order, so where training stops moves, not what each step does).

Every decision is one sentence, logged and kept in the new job's status.json (`resume`): "resuming from job
X's checkpoint at step N", or why it starts from step 0.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sftflow.backends.base import JobState
from sftflow.backends.local import jobs
from sftflow.infra import storage

log = logging.getLogger(__name__)

#: Training parameters that may differ between the cancelled job and its successor (see the module doc).
NOT_FINGERPRINTED = ("budget_s",)


def fingerprint(request: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint's job must have trained on for another job to resume it: the base model, the
    training parameters (LocalTuner.request's `train`, less the budget) and each data file's content hash."""
    data = {role: storage.md5(request[f"{role}_uri"]) if request.get(f"{role}_uri") else None
            for role in ("train", "val")}
    train = {k: v for k, v in request.get("train", {}).items() if k not in NOT_FINGERPRINTED}
    return {"base_model": request.get("base_model"), "train": train, "data": data}


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Each difference in words ("lora_rank 4 → 8", "train data changed"), in a fixed order."""
    out = []
    if old.get("base_model") != new.get("base_model"):
        out.append(f"base model {old.get('base_model')} → {new.get('base_model')}")
    old_t, new_t = old.get("train", {}), new.get("train", {})
    for k in sorted(set(old_t) | set(new_t)):
        if old_t.get(k) != new_t.get(k):
            out.append(f"{k} {old_t.get(k, 'unset')} → {new_t.get(k, 'unset')}")
    for role in ("train", "val"):
        a, b = old.get("data", {}).get(role), new.get("data", {}).get(role)
        if a != b:
            out.append(f"{role} data " + ("changed" if a and b else "added" if b else "removed"))
    return out


@dataclass(frozen=True)
class Decision:
    """Where a new job starts: `source` is the cancelled job's folder to resume from (None: step 0)."""

    source: Path | None
    step: int | None
    note: str


def _checkpoint_step(job_dir: Path, status: dict[str, Any]) -> int:
    """The step `checkpoint.pt` holds: recorded by the runner when it wrote it, else read from the file."""
    if status.get("checkpoint_step") is not None:
        return int(status["checkpoint_step"])
    from sftflow.backends.local.runner import load_checkpoint

    return int(load_checkpoint(job_dir / "checkpoint.pt")["step"])


def decide(jobs_root: Path, key: str, new_fingerprint: dict[str, Any], exclude: str = "") -> Decision | None:
    """Whether a new job for intent `key` resumes from the last ended job of that intent; None when there is
    none (the intent's first job). Only a CANCELLED job is resumed: a FAILED one may have failed from its state."""
    if not jobs_root.is_dir():
        return None
    ended = []
    for d in jobs_root.iterdir():
        meta, st = jobs.read_json(d / "spec.json"), jobs.read_json(d / "status.json")
        if d.name != exclude and meta.get("spec", {}).get("key") == key and st \
                and JobState(st.get("state", "PENDING")).ended:
            ended.append((st.get("create_time") or "", d.name, d, meta, st))
    if not ended:
        return None
    *_, d, meta, st = max(ended)
    state = st.get("state")
    if state != JobState.CANCELLED.value:
        return Decision(None, None, f"starting from step 0: the last job for this intent, {d.name}, ended {state}, "
                                    "not cancelled (only a cancelled job's checkpoint is resumed)")
    if not (d / "checkpoint.pt").is_file():
        return Decision(None, None, f"starting from step 0: job {d.name} was cancelled before it saved a checkpoint")
    old = meta.get("fingerprint")
    if old is None:
        return Decision(None, None, f"starting from step 0: job {d.name} was made by an earlier sftflow that did "
                                    "not record what it trained on, so its checkpoint cannot be matched")
    diff = differences(old, new_fingerprint)
    if diff:
        return Decision(None, None, f"starting from step 0: job {d.name}'s inputs differ ({', '.join(diff)})")
    try:
        step = _checkpoint_step(d, st)
    except (OSError, ValueError, KeyError) as exc:
        return Decision(None, None, f"starting from step 0: job {d.name}'s checkpoint cannot be read ({exc})")
    return Decision(d, step, f"resuming from job {d.name}'s checkpoint at step {step}")


def _copy_tree(src: str, dest: str) -> None:
    """Copy every file under `src` to `dest`, config.json last (its presence means the model is complete)."""
    src = src.rstrip("/")
    for uri in sorted(storage.list_uris(src + "/"), key=lambda u: storage.name_of(u) == "config.json"):
        rel = uri[len(src) + 1:]
        storage.write_bytes(storage.join(dest, *rel.split("/")), storage.read_bytes(uri))


def seed(job_dir: Path, decision: Decision, storage_root: str) -> None:
    """Give the new job at `job_dir` the cancelled job's checkpoint and the per-epoch checkpoints it had
    uploaded up to that step (copied under the new job's models folder, so that each job's outputs stay its
    own for cleanup), and record the decision in its status.json."""
    if decision.source is None:
        jobs.update_status(job_dir, resume=decision.note)
        return
    src = decision.source
    shutil.copyfile(src / "checkpoint.pt", job_dir / "checkpoint.pt")
    kept = []
    for c in jobs.read_json(src / "status.json").get("checkpoints", []):
        if decision.step is not None and c.get("step", 0) > decision.step:
            continue
        uri = storage.join(storage_root, "models", job_dir.name, "checkpoints", f"epoch-{c['epoch']}")
        _copy_tree(c["endpoint"], uri)
        kept.append(dict(c, endpoint=uri))
    jobs.update_status(job_dir, resume=decision.note, resumed_from={"job": src.name, "step": decision.step},
                       checkpoint_step=decision.step, checkpoints=kept)
