"""Where every file of a run lives, in one place (storage root = gs://bucket[/prefix] or a local dir).

<root>/datasets/{train,val,test}/<kind>-<sha12>.<ext>   content-addressed: same data, same object
<root>/models/<job-id>/                                   local backend's tuned adapters
<root>/tuning/<key>.json                                  record of a finished tuning intent
<root>/runs/<run>/eval/<label>/results.jsonl, summary.json, *.png, report.md
<root>/runs/<run>/compare/comparison.json, *.png, report.md
<root>/runs/<run>/report.md, report.json
"""

from __future__ import annotations

import re

from sftflow.storage import join

#: The only names sftflow gives its files under datasets/ and tuning/ (cleanup deletes nothing else).
DATASET_NAME = re.compile(r"^(train|val|test)/\1-[0-9a-f]{12}\.[A-Za-z0-9]{0,16}$")
TUNING_RECORD_NAME = re.compile(r"^k[0-9a-f]{20}\.json$")  # see sftflow.tuning.tuning_key


def dataset_uri(root: str, kind: str, sha256: str, ext: str) -> str:
    return join(root, "datasets", kind, f"{kind}-{sha256[:12]}.{ext}")


def is_dataset_name(relative: str) -> bool:
    """`relative` (to <root>/datasets/) is a name `dataset_uri` makes: `<kind>/<kind>-<sha12>.<ext>`."""
    return bool(DATASET_NAME.match(relative))


def is_tuning_record_name(relative: str) -> bool:
    return bool(TUNING_RECORD_NAME.match(relative))


def tuning_record_uri(root: str, key: str) -> str:
    return join(root, "tuning", f"{key}.json")


def eval_dir(run_root: str, label: str) -> str:
    return join(run_root, "eval", label)


def compare_dir(run_root: str) -> str:
    return join(run_root, "compare")


def prepared_uri(run_root: str) -> str:
    """prepare_data's output (dataset URIs + summaries): what `tune` and `evaluate` default to."""
    return join(run_root, "prepared.json")


def tuned_uri(run_root: str) -> str:
    """The run's latest tuned model/endpoint (what `evaluate --model tuned` resolves to)."""
    return join(run_root, "tuned.json")
