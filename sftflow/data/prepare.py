"""Step: prepare the data — download each source, convert it, validate each file, stop on any problem,
upload content-addressed, and save runs/<run>/prepared.json (a PreparedData record). The flow runs each
function per file so that each is cached."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from sftflow.infra import layout, storage
from sftflow.cost.estimate import training_usd
from sftflow.data.formats import convert_messages_file
from sftflow.data.rules import Problem, validate_contents_file
from sftflow.data.testset import validate_test_csv
from sftflow.errors import DataError
from sftflow.records import FileSummary, PreparedData, Record


class UploadedFile(Record):
    uri: str
    uploaded: bool  # False: an identical object was already there
    md5: str


def download_source(uri: str, dest_dir: str | Path) -> Path:
    """Fetch a gs://, https:// or local source into `dest_dir/<hash of the URI>/<its name>` (atomic; public
    gs:// anonymously), so two sources of one name never collide."""
    tag = hashlib.sha256(uri.encode()).hexdigest()[:12]
    dest = Path(dest_dir) / tag / storage.name_of(uri)
    storage.download(uri, dest)
    return dest


def convert_source(src: str, kind: str, out_dir: str | Path, limit: int | None, shuffle_seed: int | None,
                   source: str) -> dict:
    """Chat `messages` JSONL → Gemini `contents` JSONL named by its content (`<kind>-<sha12>.jsonl`), each kept
    example checked against Gemini's rules; problems (named by `source` and its lines) raise DataError."""
    tmp = Path(out_dir) / f"{kind}.converting.jsonl"
    report = convert_messages_file(src, tmp, limit=limit, shuffle_seed=shuffle_seed, source_name=source)
    sha = storage.sha256_of_file(tmp)
    dest = Path(out_dir) / f"{kind}-{sha[:12]}.jsonl"
    tmp.replace(dest)
    return {"path": str(dest), "sha256": sha, "examples_in": report.examples_in, "examples_out": report.examples_out}


def validate_file(path: str, kind: str, source: str) -> FileSummary:
    """Check a file against Gemini's tuning rules (or, for kind 'test', the test-CSV rules)."""
    if kind == "test":
        rep = validate_test_csv(path, source_name=source)
        tokens = longest = None
    else:
        rep = validate_contents_file(path, kind, source_name=path)  # file-level rules: the converted file
        tokens, longest = rep.estimated_tokens, rep.max_example_tokens
    return FileSummary(kind=kind, examples=rep.examples, estimated_tokens=tokens, max_example_tokens=longest,
                       source=source, problems=tuple(asdict(p) for p in rep.problems),
                       problem_count=rep.problem_count)


def raise_on_problems(summaries: Iterable[FileSummary], errors: Sequence[DataError] = ()) -> None:
    """Stop before anything is uploaded when any file has a problem; list them all (files in
    the order checked: conversion problems first, then the validation of the others)."""
    summaries = list(summaries)
    problems = [p for e in errors for p in e.problems]
    problems += [Problem(**p) for s in summaries for p in s.problems]
    if problems:
        count = sum(e.count for e in errors) + sum(s.problem_count for s in summaries)
        raise DataError(problems, count=count)


def upload_dataset(path: str, root: str, kind: str) -> UploadedFile:
    """Copy a validated file to <root>/datasets/<kind>/ unless an identical object is already there."""
    sha = storage.sha256_of_file(path)
    ext = Path(path).suffix.lstrip(".")
    uri = layout.dataset_uri(root, kind, sha, ext)
    local_md5 = storage.md5_of_file(path)
    if storage.md5(uri) == local_md5:
        return UploadedFile(uri=uri, uploaded=False, md5=local_md5)
    content_type = "application/jsonl" if ext == "jsonl" else "text/csv"
    storage.upload_file(path, uri, content_type=content_type)
    return UploadedFile(uri=uri, uploaded=True, md5=local_md5)


def save_prepared(run_root: str, uploaded: Mapping[str, UploadedFile], summaries: Sequence[FileSummary],
                  epochs: int, price_per_million: float) -> PreparedData:
    """The PreparedData record (tuning cost estimated from the training file's tokens), saved as
    prepared.json, where `tune` and `evaluate` find the run's datasets."""
    train = next(s for s in summaries if s.kind == "train")
    prepared = PreparedData(
        train=uploaded["train"].uri, val=uploaded["val"].uri, test=uploaded["test"].uri,
        summaries=tuple(summaries),
        cost_usd=training_usd(train.estimated_tokens or 0, epochs, price_per_million),
        uploaded=tuple(u.uri for u in uploaded.values() if u.uploaded),
    )
    prepared.write(layout.prepared_uri(run_root))
    return prepared
