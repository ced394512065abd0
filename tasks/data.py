"""Data tasks: download, convert, validate, upload — cached on content, retried on transient errors."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from sftflow.infra import layout, storage
from sftflow.errors import DataError
from sftflow.records import FileSummary
from sftflow.data.prepare import UploadedFile, convert_source, download_source, upload_dataset, validate_file
from tasks.common import RETRY_TRANSIENT, key_from, retry_transient


def _source_key(p: dict) -> list:
    return [p["uri"], storage.fingerprint(p["uri"]), str(p["dest_dir"]), layout.disk_id(p["dest_dir"])]


@task(
    name="download",
    cache_key_fn=key_from(_source_key),
    persist_result=True,
    result_serializer="json",
    retry_condition_fn=retry_transient,
    **RETRY_TRANSIENT,
)
def download(uri: str, dest_dir: Path) -> str:
    """sftflow.data.prepare.download_source, cached on the source's content, retried on transient errors."""
    dest = download_source(uri, dest_dir)
    get_run_logger().info("downloaded %s (%d bytes)", uri, dest.stat().st_size)
    return str(dest)


@task(
    name="convert",
    cache_key_fn=key_from(
        lambda p: [storage.fingerprint(p["src"]), p["kind"], p["limit"], p["shuffle_seed"], str(p["out_dir"]),
                   layout.disk_id(p["out_dir"])]  # its result is a file on this disk
    ),
    persist_result=True,
    result_serializer="json",
)
def convert(src: str, kind: str, out_dir: Path, limit: int | None, shuffle_seed: int | None, source: str) -> dict:
    """sftflow.data.prepare.convert_source, cached on the source's content and the conversion's settings."""
    out = convert_source(src, kind, out_dir, limit, shuffle_seed, source)
    get_run_logger().info("converted %s: %d examples in, %d out -> %s", src, out["examples_in"], out["examples_out"],
                          out["path"])
    return out


@task(name="validate", cache_key_fn=key_from(lambda p: [storage.fingerprint(p["path"]), p["kind"]]), persist_result=True,
      result_serializer="json")
def validate(path: str, kind: str, source: str) -> FileSummary:
    """sftflow.data.prepare.validate_file, cached on the file's content and kind."""
    return validate_file(path, kind, source)


def converted_or_problems(states: dict) -> tuple[dict, list[DataError]]:
    """Split convert task states into results and data problems, so a bad training file does
    not stop the check of the validation file; any other failure is raised as is."""
    done, problems = {}, []
    for kind, state in states.items():
        result = state.result(raise_on_failure=False)
        if isinstance(result, DataError):
            problems.append(result)
        elif isinstance(result, BaseException):
            raise result
        else:
            done[kind] = result
    return done, problems


@task(name="upload", retry_condition_fn=retry_transient, **RETRY_TRANSIENT)
def upload(path: str, root: str, kind: str) -> UploadedFile:
    """sftflow.data.prepare.upload_dataset: a validated file to <root>/datasets/<kind>/, unless already there.

    Deliberately not cached by Prefect: the bucket is the truth, so every run checks it (one
    metadata request per file) and restores an object someone deleted; identical ones are skipped.
    """
    out = upload_dataset(path, root, kind)
    if out.uploaded:
        get_run_logger().info("uploaded %s -> %s", path, out.uri)
    else:
        get_run_logger().info("%s already holds identical content: not uploaded", out.uri)
    return out
