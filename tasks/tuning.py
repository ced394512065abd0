"""Tuning tasks: submit once per intent, await with progress artifacts, cancel on interrupt. Each takes the
narrow TuningSetup (sftflow.tuning.setup), not the whole Settings."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_image_artifact, create_link_artifact, create_markdown_artifact
from prefect.artifacts import create_progress_artifact
from prefect.artifacts import create_table_artifact
from prefect.artifacts import update_progress_artifact

from sftflow.cost import estimate as cost, token_count
from sftflow.infra import layout, storage
from sftflow.backends import make_tuner
from sftflow.backends.base import JobStatus, TuningSpec
from sftflow.data.prepare import raise_on_problems, validate_file
from sftflow.records import FileSummary
from sftflow.tuning.polling import await_job, cancel_on_interrupt
from sftflow.records import TuningRecord
from sftflow.tuning.report import job_markdown
from sftflow.tuning import step as steps
from sftflow.tuning.intent import Claims, ensure_job
from sftflow.tuning.setup import TuningSetup
from tasks.common import RETRY_TRANSIENT, key_from, retry_transient


def _content_id(uri: str) -> str:
    """The content's MD5 (no download on Cloud Storage; same for a local file and its upload), else a
    fingerprint. Never raises: a missing file is the task's error, not the cache key's."""
    try:
        digest = storage.md5(uri)
        return f"md5:{digest}" if digest else storage.fingerprint(uri)
    except Exception as exc:  # noqa: BLE001
        return f"unreadable:{uri}:{type(exc).__name__}"


@task(name="check-tuning-data", cache_key_fn=key_from(lambda p: [_content_id(p["uri"]), p["kind"], "FileSummary"]),
      persist_result=True, result_serializer="json", retry_condition_fn=retry_transient, **RETRY_TRANSIENT)
def check_tuning_data(uri: str, kind: str, work_dir: Path) -> FileSummary:
    """sftflow.data.prepare.validate_file (the rules prepare applies) on the file `uri` names, downloaded first
    when remote; cached by content, so a file prepare already checked, or checked before, is not fetched again."""
    if not (storage.is_gcs(uri) or storage.is_http(uri)):
        if not Path(uri).is_file():
            raise storage.StorageError(f"{uri}: no such file")
        return validate_file(uri, kind, source=uri)
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="check-", dir=work_dir))
    try:
        return validate_file(str(storage.download(uri, tmp / f"{kind}.jsonl")), kind, source=uri)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_datasets(work_dir: Path, train_uri: str, val_uri: str | None) -> list[tuple[str, str, dict]]:
    """Gemini's rules on what will be submitted; DataError (`URI:line: field: problem`, named by the URI the
    user gave: a cached check may hold another name) on any problem. Returns [(role, URI, check summary)]
    for the estimate."""
    checked = {train_uri: check_tuning_data(train_uri, "train", Path(work_dir) / "checks")}
    if val_uri:
        checked[val_uri] = check_tuning_data(val_uri, "val", Path(work_dir) / "checks")
    raise_on_problems([s.model_copy(update={"problems": tuple(dict(p, path=uri) for p in s.problems)})
                       for uri, s in checked.items()])
    return [(s.kind, uri, s.to_json()) for uri, s in checked.items()]


@task(name="read-tuning-record")
def read_tuning_record(setup: TuningSetup, key: str) -> TuningRecord | None:
    """A finished intent's record: a rerun returns it without calling any tuning API."""
    record = steps.read_tuning_record(setup.storage_root, key)
    if record is not None:
        get_run_logger().info("tuning intent %s already succeeded as %s: reusing it", key, record.name)
    return record


@task(name="estimate-tuning-cost", retry_condition_fn=retry_transient, **RETRY_TRANSIENT)
def estimate_tuning_cost(setup: TuningSetup, files: list[tuple[str, str, dict]]) -> dict:
    """Price the job before anything is submitted (table + markdown artifacts). `files`: [(role, URI, the
    check-tuning-data summary)]; vertex counts tokens with countTokens (cached by content), else the
    summaries' estimate is used as is: nothing is downloaded again."""
    log = get_run_logger()
    estimate = token_count.estimate_for(setup, files, warn=log.warning)
    create_table_artifact(estimate.rows(), key="tuning-cost-estimate",
                          description=f"Tuning cost estimate: {estimate.summary()}")
    create_markdown_artifact(estimate.markdown(setup.max_tuning_cost_usd), key="tuning-cost",
                             description="Tuning cost estimate and cap")
    log.info("tuning cost estimate: %s; cap $%g", estimate.summary(), setup.max_tuning_cost_usd)
    return estimate.to_dict()


@task(name="submit-tuning-job", retry_condition_fn=retry_transient, **RETRY_TRANSIENT)
def submit_tuning_job(setup: TuningSetup, spec: TuningSpec, estimate: dict | None = None) -> dict:
    """Attach to this intent's live job, or submit one; never a second job for the same intent.

    A new job is submitted only if `estimate` is within `max_tuning_cost_usd` (CostCapExceeded
    otherwise); attaching to a job already running is not capped: its cost is committed.
    """
    log = get_run_logger()
    tuner = make_tuner(setup)

    def cap() -> None:
        if estimate is not None:
            cost.check_cap(cost.CostEstimate.from_dict(estimate), setup.max_tuning_cost_usd)

    claims = Claims(layout.tuning_claims_root(setup.storage_root), stale_after=setup.claim_stale_after)
    name, attached = ensure_job(tuner, spec, resubmit_failed=setup.resubmit_failed, before_submit=cap,
                                claims=claims)
    status = tuner.get(name)
    if attached:
        log.info("attached to existing tuning job %s (key %s): no new job submitted", name, spec.key)
    else:  # local backend: where the new job starts when an earlier one of the intent ended (resume.py)
        note = status.stats.get("resume")
        log.info("submitted tuning job %s (key %s)%s", name, spec.key, f"; {note}" if note else "")
    if status.console_url:
        create_link_artifact(status.console_url, link_text=name, key="tuning-job-console",
                             description="The tuning job in the Google Cloud console")
    return {"name": name, "attached": attached, "state": status.state.value}


@task(name="await-tuning-job")
def await_tuning_job(setup: TuningSetup, name: str, already_waited: float = 0.0) -> JobStatus:
    """Poll the job to its end, updating progress and status artifacts; cancels it on interrupt.
    `already_waited`: seconds of tuning_timeout the run spent suspended while the job trained."""
    log = get_run_logger()
    tuner = make_tuner(setup)
    progress_id = create_progress_artifact(progress=0.0, key="tuning-progress", description=f"Tuning job {name}")
    last: dict = {"state": None, "step": None, "at": 0.0}

    def on_update(st: JobStatus, elapsed: float) -> None:
        if st.progress is not None:
            update_progress_artifact(artifact_id=progress_id, progress=round(100 * st.progress, 1))
        changed = st.state != last["state"] or st.step != last["step"]
        if changed or time.monotonic() - last["at"] > 300:
            log.info("job %s: %s, step %s/%s, %.0fs elapsed", name, st.state.value, st.step, st.total_steps, elapsed)
            create_markdown_artifact(job_markdown(st, elapsed), key="tuning-job-status",
                                     description="Tuning job state")
            last.update(state=st.state, step=st.step, at=time.monotonic())

    try:
        final = await_job(tuner, name, poll_interval=setup.tuning_poll_interval, timeout=setup.tuning_timeout,
                          on_update=on_update, cancel_on_timeout=setup.cancel_job_on_timeout,
                          already_waited=already_waited)
    except Exception:  # a failure, not an interrupt: await_job already applied the timeout policy
        raise
    except BaseException:  # Ctrl-C, SIGTERM (Prefect's TerminationSignal, sent on cancellation), exit
        cancel_on_interrupt(tuner, name, enabled=setup.cancel_job_on_interrupt, logger=log)
        raise
    update_progress_artifact(artifact_id=progress_id, progress=100.0)
    return final


@task(name="record-tuned-model")
def record_tuned_model(setup: TuningSetup, spec: TuningSpec, status: JobStatus) -> TuningRecord:
    """Save the finished intent (reruns and cleanup find it) and the loss plot (an image artifact on GCS)."""
    record = steps.write_tuning_record(setup.storage_root, setup.run_name, spec, status)
    uri = steps.save_loss_plot(setup.run_root, record)
    if uri and storage.is_gcs(uri):
        create_image_artifact(image_url=uri.replace("gs://", "https://storage.cloud.google.com/", 1),
                              key="tuning-loss", description="Training / validation loss")
    return record
