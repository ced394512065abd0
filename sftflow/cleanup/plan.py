"""What `cleanup` deletes — only what sftflow made — planned in full before anything is deleted.

A plan lists each item with its kind and why it is sftflow's; anything that looks like ours but
is not (a user's file under datasets/, a record that cannot be read, a name of the wrong shape)
is left and listed with the reason. Scope, for run R under storage root S:
- `S/runs/R/…`: folder-scoped (`runs/R/`, never `runs/R2/` or `runs/R-old/`);
- `S/tuning/k<20 hex>.json` records whose `run_name` is R, and the tuned model / endpoint (or
  local model folder) each names;
- local backend: the job folders `<work>/jobs/<job>/` (spec, status, checkpoint.pt, runner.log) of R's jobs —
  those whose key is one of R's tuning records', or whose spec.json names R (a job cancelled before it was
  recorded, and the job that resumed from it); a job whose runner is still alive is left;
- with `include_datasets`: `S/datasets/<kind>/<kind>-<sha12>.<ext>` only (see sftflow.infra.layout),
  never `S/datasets-archive/…` nor other files under `S/datasets/`.
The tuned model / endpoint that is the storage root's current champion (sftflow.selection.champion), and its tuning record,
are kept ("kept: champion") unless `include_champion`: then the champion is recorded as retired first, so that
`sftflow champion` never names a deleted endpoint, even if the deletion is interrupted.
Executing deletes tuned outputs first and records last, so an interrupted cleanup can be rerun.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sftflow.selection import champion
from sftflow.infra import layout, storage
from sftflow.backends.base import JobStatus, Tuner
from sftflow.config import Settings
from sftflow.records import TuningRecord

RUN_OBJECT, TUNING_RECORD, TUNED_OUTPUT, DATASET = "run object", "tuning record", "tuned output", "dataset"
JOB_FOLDER = "local job folder"
#: A Vertex AI endpoint or model (cleanup deletes models by name without the @version).
_VERTEX_OUTPUT = re.compile(r"^projects/[^/\s]+/locations/[^/\s]+/(endpoints|models)/[A-Za-z0-9_-]+$")
_LOCAL_JOB = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_VERTEX_JOB = re.compile(r"^projects/[^/\s]+/locations/[^/\s]+/tuningJobs/[0-9]+$")


def _expected_job(name: str) -> bool:
    """A Vertex tuning job name or a local job id (never a path: no '/', no '..')."""
    return bool(_VERTEX_JOB.match(name) or (_LOCAL_JOB.match(name) and ".." not in name))


@dataclass(frozen=True)
class Item:
    uri: str  # storage URI, local path or cloud resource name
    kind: str  # RUN_OBJECT, TUNING_RECORD, TUNED_OUTPUT, DATASET, or what a skipped item looked like
    reason: str  # why it is sftflow's (to delete) or why it is left


@dataclass
class Plan:
    delete: list[Item] = field(default_factory=list)
    skipped: list[Item] = field(default_factory=list)
    jobs: list[JobStatus] = field(default_factory=list)  # whose tuned outputs are deleted
    records: list[str] = field(default_factory=list)
    retire: dict | None = None  # the champion entry whose outputs are deleted (include_champion)
    storage_root: str = ""  # where the champion history lives


def _relative(uri: str, folder: str) -> str | None:
    prefix = folder.rstrip("/") + "/"
    return uri[len(prefix):] if uri.startswith(prefix) else None


def _expected_output(name: str, root: str, job: str) -> bool:
    """A tuned output's name has the shape its backend gives it: a Vertex endpoint/model, or a file
    under `<root>/models/<job>/` (local backend)."""
    if _VERTEX_OUTPUT.match(name):
        return True
    rel = _relative(name, storage.join(root, "models", job))
    return _expected_job(job) and rel is not None and ".." not in rel.split("/")


def _is_champion(entry: dict | None, status: JobStatus, outputs: list[str]) -> bool:
    """The champion was made by this job: same job, or its endpoint / model is among the job's outputs."""
    if entry is None:
        return False
    m = entry["model"]
    named = {m.get("endpoint"), (m.get("tuned_model") or "").split("@", 1)[0]} - {None, ""}
    return m.get("job") == status.name or bool(named & set(outputs))


def plan_cleanup(settings: Settings, get_tuner: Callable[[], Tuner], include_datasets: bool = False,
                 include_champion: bool = False) -> Plan:
    """Everything `execute` would delete for `settings.run_name`, and everything it leaves, with reasons.

    `get_tuner` is called only when the run has a tuning record (so listing a run that never
    tuned needs no cloud credentials). Deletes nothing.
    """
    s, plan = settings, Plan(storage_root=settings.storage_root)
    root, run = s.storage_root, s.run_name
    tuner: Tuner | None = None
    keys: dict[str, str] = {}  # a record's intent key -> "" (its job folders go) or why they are left
    current = champion.current(root)
    records = storage.join(root, "tuning")
    for uri in storage.list_uris(records):
        rel = _relative(uri, records) or uri
        if not layout.is_tuning_record_name(rel):
            plan.skipped.append(Item(uri, "file under tuning/", "not sftflow's: not a tuning record name"))
            continue
        try:
            record = json.loads(storage.read_text(uri))
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            if record.get("run_name") != run:
                continue
            status = TuningRecord.from_json(record, uri).status()
        except (storage.StorageError, UnicodeDecodeError, ValueError) as exc:
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            plan.skipped.append(Item(uri, TUNING_RECORD, f"unreadable tuning record, skipped: {reason}"))
            continue
        if not _expected_job(status.name):
            plan.skipped.append(Item(uri, TUNING_RECORD, f"skipped: unexpected job name {status.name!r}"))
            _left(keys, status.key, "its tuning record was skipped")
            continue
        tuner = tuner or get_tuner()
        outputs = tuner.delete_outputs(status, dry_run=True)
        odd = [o for o in outputs if not _expected_output(o, root, status.name)]
        if odd:
            plan.skipped.append(Item(uri, TUNING_RECORD, f"skipped: names an unexpected output {odd[0]!r}"))
            _left(keys, status.key, "its tuning record was skipped")
            continue
        if _is_champion(current, status, outputs):
            if not include_champion:
                why = (f"kept: champion #{current['seq']} {champion.name_of(current)}; --include-champion deletes it "
                       "and retires the champion")
                plan.skipped += [Item(o, TUNED_OUTPUT, why) for o in outputs] + [Item(uri, TUNING_RECORD, why)]
                _left(keys, status.key, why)
                continue
            plan.retire = current
        if status.key:
            keys.setdefault(status.key, "")
        plan.jobs.append(status)
        plan.delete += [Item(o, TUNED_OUTPUT, f"made by tuning job {status.name}") for o in outputs]
        plan.records.append(uri)
    for uri in storage.list_uris(s.run_root):
        if _relative(uri, s.run_root) is None:  # cannot happen with folder-scoped listing; never trust it
            plan.skipped.append(Item(uri, RUN_OBJECT, f"not under runs/{run}/"))
            continue
        plan.delete.append(Item(uri, RUN_OBJECT, f"under runs/{run}/"))
    _plan_job_folders(plan, Path(s.work_dir) / "jobs", run, keys)
    if include_datasets:
        datasets = storage.join(root, "datasets")
        for uri in storage.list_uris(datasets):
            rel = _relative(uri, datasets) or uri
            if layout.is_dataset_name(rel):
                plan.delete.append(Item(uri, DATASET, "content-addressed dataset sftflow uploaded"))
            else:
                plan.skipped.append(Item(uri, "file under datasets/",
                                         "not sftflow's: not a <kind>/<kind>-<sha12>.<ext> name"))
    plan.delete += [Item(u, TUNING_RECORD, f"tuning record of run {run}") for u in plan.records]
    return plan


def _left(keys: dict[str, str], key: str | None, why: str) -> None:
    if key:
        keys[key] = why


def _plan_job_folders(plan: Plan, jobs_root: Path, run: str, keys: dict[str, str]) -> None:
    """The local job folders of run `run`: a key of its records (a left record leaves its folders too), or
    spec.json's run_name. A folder whose runner is alive is left (it is writing there)."""
    from sftflow.backends.base import JobState
    from sftflow.backends.local import jobs

    if not jobs_root.is_dir():
        return
    for d in sorted(jobs_root.iterdir()):
        if d.is_symlink() or not d.is_dir() or not _expected_job(d.name):
            continue
        try:
            meta, st = jobs.read_json(d / "spec.json"), jobs.read_json(d / "status.json")
            key = meta.get("spec", {}).get("key")
        except (ValueError, AttributeError, OSError):
            continue  # not a job folder we can read: whose it is cannot be told, so it is not ours to delete
        if key not in keys and meta.get("run_name") != run:
            continue
        if keys.get(key):
            plan.skipped.append(Item(str(d), JOB_FOLDER, keys[key]))
            continue
        state = st.get("state", "PENDING")
        if state in {s.value for s in JobState} and not JobState(state).ended and \
                jobs.is_alive(st.get("pid"), st.get("pid_start")):
            plan.skipped.append(Item(str(d), JOB_FOLDER, f"left: tuning job {d.name} is {state} (its runner, pid "
                                                         f"{st.get('pid')}, is alive); cancel it or let it end"))
            continue
        plan.delete.append(Item(str(d), JOB_FOLDER, f"folder of local tuning job {d.name} ({state}) of run {run}"))


def summary(plan: Plan, deleted: bool) -> dict:
    """What the cleanup flow returns: the items to delete (or deleted), the ones left with their reason, and
    the champion it retires."""
    def rows(items: list[Item]) -> list[dict]:
        return [{"uri": i.uri, "kind": i.kind, "reason": i.reason} for i in items]

    return {"items": [i.uri for i in plan.delete], "plan": rows(plan.delete), "skipped": rows(plan.skipped),
            "retire": None if plan.retire is None else f"champion #{plan.retire['seq']} {champion.name_of(plan.retire)}",
            "deleted": deleted}


def execute(plan: Plan, get_tuner: Callable[[], Tuner], run_root: str | None = None) -> list[Item]:
    """Retire the champion whose outputs go, then delete what `plan` lists: tuned outputs, then objects, then
    the records naming them."""
    if plan.retire is not None:
        champion.retire(plan.storage_root, plan.retire, "its tuned model / endpoint was deleted by sftflow cleanup "
                                                   "--include-champion")
    if plan.jobs:
        tuner = get_tuner()
        for status in plan.jobs:
            tuner.delete_outputs(status, dry_run=False)
    for item in plan.delete:
        if item.kind in (RUN_OBJECT, DATASET):
            storage.delete(item.uri)
        elif item.kind == JOB_FOLDER:
            shutil.rmtree(item.uri, ignore_errors=True)  # a second cleanup after an interrupted one finds less
    for uri in plan.records:
        storage.delete(uri)
    if run_root and not storage.is_gcs(run_root) and Path(run_root).is_dir():
        _remove_empty_dirs(Path(run_root))
    return plan.delete


def _remove_empty_dirs(top: Path) -> None:
    for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()
    if not any(top.iterdir()):
        top.rmdir()
