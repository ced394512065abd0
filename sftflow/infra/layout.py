"""Where every file of a run lives, in one place (storage root = gs://bucket[/prefix] or a local dir).

<root>/datasets/{train,val,test}/<kind>-<sha12>.<ext>   content-addressed: same data, same object
<root>/models/<job-id>/                                   local backend's tuned adapters
<root>/tuning/<key>.json                                  record of a finished tuning intent
<root>/claims/tuning/<key>/<jobs-seen>-<n>.json           who submits an intent's job (one job per intent)
<root>/runs/<run>/eval/<label>/results.jsonl, summary.json, *.png, report.md
<root>/runs/<run>/compare/comparison.json, *.png, report.md
<root>/runs/<run>/sweep/leaderboard.json, leaderboard.png, report.md
<root>/champion/history/<seq>.json                        every champion decision (sftflow.selection.champion)
<root>/runs/<run>/tuning/loss.png                         the tuning job's loss curves
<root>/runs/<run>/report.md, report.json
<work>/checkpoints/<label>-<ident16>.jsonl                evaluation checkpoints (no bucket: local disk)
<root>/runs/<run>/checkpoints/<label>-<ident16>/*.jsonl   ... with a bucket: seen by every machine,
<root>/runs/<run>/checkpoints/<label>-<ident16>.lease     ... one writer at a time (sftflow.infra.lease)
<root>/prefect-results/<cache key>                        Prefect's cache records, with a bucket

Every path is built here from checked pieces: a name (run, label) must match `NAME_PATTERN`, and
each piece must be one path segment, so no input can place a file outside its folder
(`../../x`, `a/b` are refused with a one-line `LayoutError` before any work starts).
"""

from __future__ import annotations

import re
from pathlib import Path

from sftflow.errors import LayoutError
from sftflow.infra.storage import create_if_absent, is_gcs, join

#: Run names and result labels: lowercase letters, digits, '-' and '_', at most 63, starting with
#: a letter or digit — safe as a path segment, a GCS prefix and (with '_' → '-') an artifact key.
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_NAME = re.compile(NAME_PATTERN)
NAME_RULE = "1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit"


def check_name(field: str, value: object) -> str:
    """`value` if it is a valid run name / result label, else LayoutError naming `field`."""
    if isinstance(value, str) and _NAME.fullmatch(value):
        return value
    text = repr(value)
    shown = text if len(text) <= 70 else text[:67] + "..."
    raise LayoutError(f"{field}: {shown} is not a valid name; use {NAME_RULE}")


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) from checked names."""
    return "-".join(parts).replace("_", "-")


def _segment(part: str) -> str:
    if not part or part in (".", "..") or any(c in part for c in "/\\\0"):
        raise LayoutError(f"{part!r}: not a single path segment; refusing to write outside the run's folder")
    return part


def child(base: str, *parts: str) -> str:
    """`base/part/...`, refusing any piece that would climb out of `base` (the one central check).

    Each piece must be one segment (no '/', '\\', '.', '..'); for local paths the resolved result
    must also stay under the resolved base (a symlink inside the run cannot lead out).
    """
    uri = join(base, *(_segment(p) for p in parts))
    if not is_gcs(base):
        root = Path(base).resolve()
        if not Path(uri).resolve().is_relative_to(root):
            raise LayoutError(f"{uri}: resolves outside {root}; refusing to write there")
    return uri


def run_root(storage_root: str, run_name: str) -> str:
    return child(storage_root, "runs", check_name("run_name", run_name))


#: The only names sftflow gives its files under datasets/ and tuning/ (cleanup deletes nothing else).
DATASET_NAME = re.compile(r"^(train|val|test)/\1-[0-9a-f]{12}\.[A-Za-z0-9]{0,16}$")
TUNING_RECORD_NAME = re.compile(r"^k[0-9a-f]{20}\.json$")  # see sftflow.tuning.intent.tuning_key


def dataset_uri(root: str, kind: str, sha256: str, ext: str) -> str:
    return child(root, "datasets", kind, f"{kind}-{sha256[:12]}.{ext}")


def is_dataset_name(relative: str) -> bool:
    """`relative` (to <root>/datasets/) is a name `dataset_uri` makes: `<kind>/<kind>-<sha12>.<ext>`."""
    return bool(DATASET_NAME.match(relative))


def is_tuning_record_name(relative: str) -> bool:
    return bool(TUNING_RECORD_NAME.match(relative))


def tuning_record_uri(root: str, key: str) -> str:
    return child(root, "tuning", f"{key}.json")


def tuning_claims_root(root: str) -> str:
    """Claims on tuning intents (see sftflow.tuning.intent.ensure_job): kept apart from the records under tuning/."""
    return join(root, "claims", "tuning")


def eval_dir(run_root: str, label: str) -> str:
    return child(run_root, "eval", check_name("label", label))


def compare_dir(run_root: str) -> str:
    return child(run_root, "compare")


def judge_dir(run_root: str) -> str:
    """The pairwise judge's judgements.jsonl, judgement.json, win_tie_loss.png and report.md."""
    return child(run_root, "judge")


def sweep_dir(run_root: str) -> str:
    """A sweep's leaderboard.json, leaderboard.png and report.md."""
    return child(run_root, "sweep")


def loss_plot_uri(run_root: str) -> str:
    """The tuning job's loss curves as the run's tuning step drew them (sftflow.tuning.step.save_loss_plot)."""
    return child(run_root, "tuning", "loss.png")


def prepared_uri(run_root: str) -> str:
    """prepare_data's output (dataset URIs + summaries): what `tune` and `evaluate` default to."""
    return child(run_root, "prepared.json")


def tuned_uri(run_root: str) -> str:
    """The run's latest tuned model/endpoint (what `evaluate --model tuned` resolves to)."""
    return child(run_root, "tuned.json")


def checkpoint_path(work_dir: Path, label: str, ident: str) -> Path:
    """An evaluation's checkpoint: one per (label, evaluation identity), on local disk."""
    return Path(child(str(work_dir), "checkpoints", f"{check_name('label', label)}-{ident[:16]}.jsonl"))


def checkpoint_uri(run_root: str, work_dir: Path, label: str, ident: str) -> str:
    """Where an evaluation's checkpoint lives: in the bucket (a folder every machine of the run sees)
    when the run's storage is one, else on local disk (`checkpoint_path`)."""
    if is_gcs(run_root):
        return child(run_root, "checkpoints", f"{check_name('label', label)}-{ident[:16]}")
    return str(checkpoint_path(work_dir, label, ident))


def disk_id(folder: Path) -> str:
    """A random id of this local folder, made the first time it is asked for (`<folder>/.disk-id`).

    Part of the cache key of a task whose result names a file in `folder`: with result storage shared
    by several machines (tasks.results), a worker on a fresh disk — even at the same path, as containers
    have — must not be served a path that exists only on the disk of the machine that cached it.
    """
    import uuid

    marker = Path(folder) / ".disk-id"
    create_if_absent(str(marker), uuid.uuid4().hex.encode(), "text/plain")  # one id, however many race
    return marker.read_text().strip()
