"""Flow cleanup: delete what a run created — its objects, and the tuned models/endpoints of its jobs."""

from __future__ import annotations

import json
from typing import Any

from prefect import flow, get_run_logger

from flows.common import settings_for
from sftflow import storage
from sftflow.backends import make_tuner
from tasks.tuning import status_from


@flow(name="cleanup", log_prints=True)
def cleanup(yes: bool = False, include_datasets: bool = False, config: dict[str, Any] | None = None) -> dict:
    """List (default) or, with yes=True, delete: objects under runs/<run>/, the run's tuning records
    and the tuned models/endpoints they name; datasets too with include_datasets.

    Args:
        yes: Really delete; otherwise only list.
        include_datasets: Also the uploaded datasets (shared by runs with the same data).
        config: Any other setting of sftflow.config.Settings (run_name picks the run).
    """
    s = settings_for(config)
    log = get_run_logger()
    tuner = make_tuner(s)
    items: list[str] = []
    records: list[str] = []
    for record_uri in storage.list_uris(storage.join(s.storage_root, "tuning")):
        record = json.loads(storage.read_text(record_uri))
        if record.get("run_name") != s.run_name:
            continue
        fields = {k: v for k, v in record.items() if k not in ("spec", "run_name")}
        items += tuner.delete_outputs(status_from(fields), dry_run=not yes)
        records.append(record_uri)
    items += records
    objects = storage.list_uris(s.run_root)
    if include_datasets:
        objects += storage.list_uris(storage.join(s.storage_root, "datasets"))
    items += objects
    if yes:
        for uri in objects + records:
            storage.delete(uri)
        log.info("deleted %d item(s)", len(items))
    else:
        log.info("would delete %d item(s); pass yes=True (--yes) to delete", len(items))
    return {"items": items, "deleted": yes}
