"""Token counts that match the bill: Vertex AI countTokens on every example, cached by dataset content.

Vertex bills supervised tuning per training token as its own tokenizer counts them; characters/4
(Google's SFT notebook) is only a rule of thumb. countTokens is free
(https://cloud.google.com/vertex-ai/generative-ai/docs/multimodal/get-token-count), so the estimate
asks it for every example, concurrently and paced (`count_tokens_rpm`). A file's counts are cached in
a small JSON file under the work dir, keyed by the file's content hash and the model, so a rerun or
another run on the same data sends no request and downloads nothing. When the route is missing
(HTTP 404/501, e.g. a proxy or endpoint without it) the estimate falls back to characters/4 and says
so, as it does on the local backend (nothing is billed there).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sftflow.cost import estimate as cost
from sftflow.infra import storage
from sftflow.errors import BackendError, StorageError, TransientError
from sftflow.data.rules import MAX_EXAMPLE_TOKENS, iter_contents_records
from sftflow.infra.pacing import RateLimiter, backoff_delay

if TYPE_CHECKING:
    from sftflow.config import Settings

COUNT_METHOD = "countTokens (Vertex AI)"
_CACHE_VERSION = "1"
_CHUNK = 512  # examples in flight at once: memory stays flat on a large file

log = logging.getLogger(__name__)

CountOne = Callable[[dict], int]


class CountTokensUnavailable(RuntimeError):
    """The countTokens route is missing (404/501): fall back to the estimate."""


@dataclass(frozen=True)
class FileCount:
    """countTokens totals of one file (what the cache keeps)."""

    examples: int
    tokens: int
    max_example_tokens: int
    over_limit: int  # examples above Gemini's per-example limit
    model: str


def _cache_file(cache_dir: str | Path, content_id: str, model: str) -> str:
    key = hashlib.sha256(f"{_CACHE_VERSION}|{content_id}|{model}".encode()).hexdigest()[:32]
    return storage.join(str(cache_dir), f"{key}.json")


def read_cached(cache_dir: str | Path, content_id: str, model: str) -> FileCount | None:
    uri = _cache_file(cache_dir, content_id, model)
    try:
        return FileCount(**json.loads(storage.read_text(uri)))
    except (OSError, ValueError, TypeError, StorageError):  # absent, or a damaged file: count again
        return None


def write_cached(cache_dir: str | Path, content_id: str, count: FileCount) -> None:
    storage.write_text(_cache_file(cache_dir, content_id, count.model), json.dumps(asdict(count)), "application/json")


def cache_dirs(settings: Settings) -> list[str]:
    """Where counts are kept: this machine's work area, and the run's bucket when it has one (so a
    worker on a fresh disk does not count the same content again)."""
    dirs = [str(settings.work_dir / "token-counts")]
    if storage.is_gcs(settings.storage_root):
        dirs.append(storage.join(settings.storage_root, "token-counts"))
    return dirs


def _examples(path: str | Path) -> Iterator[dict]:
    for _line, item, _size in iter_contents_records(str(path)):
        if isinstance(item, dict):
            yield item


def _chunks(items: Iterable[dict], n: int) -> Iterator[list[dict]]:
    chunk: list[dict] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def count_examples(count_one: CountOne, examples: Iterable[dict], *, concurrency: int, rpm: float,
                   max_attempts: int, sleep: Callable[[float], None] = time.sleep,
                   on_progress: Callable[[int], None] | None = None) -> list[int]:
    """Tokens of each example, in order: `concurrency` requests at once, starts paced to `rpm`,
    408/429/5xx retried with backoff (a Retry-After holds for every thread). CountTokensUnavailable
    and permanent errors stop the count."""
    limiter, rng = RateLimiter(rpm, sleep=sleep), random.Random(0)

    def one(ex: dict) -> int:
        for attempt in range(1, max_attempts + 1):
            limiter.acquire()
            try:
                return count_one(ex)
            except TransientError as exc:
                if attempt == max_attempts:
                    raise
                if exc.retry_after:
                    limiter.defer(exc.retry_after)
                sleep(exc.retry_after or backoff_delay(attempt, 1.0, 30.0, rng))
        raise AssertionError("unreachable")

    out: list[int] = []
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="count-tokens") as pool:
        for chunk in _chunks(examples, _CHUNK):
            futures = [pool.submit(one, ex) for ex in chunk]
            try:
                out += [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
            if on_progress:
                on_progress(len(out))
    return out


def count_file(path: str | Path, count_one: CountOne, model: str, **kw: Any) -> FileCount:
    """countTokens totals of a contents JSONL file (lines that are not examples are not counted)."""
    counts = count_examples(count_one, _examples(path), **kw)
    return FileCount(examples=len(counts), tokens=sum(counts), max_example_tokens=max(counts, default=0),
                     over_limit=sum(c > MAX_EXAMPLE_TOKENS for c in counts), model=model)


def vertex_counter(settings: Settings) -> CountOne:
    """count_one(example) → tokens, through google-genai's `models.count_tokens` on the base model."""
    from google.genai import types

    from sftflow.backends.vertex_client import call, make_genai_client

    client, model = make_genai_client(settings), settings.base_model

    def count_one(ex: dict) -> int:
        si = ex.get("systemInstruction")
        config = types.CountTokensConfig(system_instruction=si) if si else None
        try:
            resp = call(f"countTokens on {model}",
                        lambda: client.models.count_tokens(model=model, contents=ex["contents"], config=config))
        except (BackendError, TransientError) as exc:
            if (exc.kind or "").split(" ")[0] in ("404", "501"):
                raise CountTokensUnavailable(str(exc)) from exc
            raise
        return int(resp.total_tokens or 0)

    return count_one


def _content_id(uri: str) -> str:
    digest = storage.md5(uri)
    return f"md5:{digest}" if digest else storage.fingerprint(uri)


def _count_uri(settings: Settings, uri: str, count_one: CountOne, cache: list[str]) -> FileCount:
    """The cached count of `uri`'s content (first hit among `cache`'s folders), else count it
    (downloading a remote file once) and keep it in each folder."""
    content_id = _content_id(uri)
    for where in cache:
        if (hit := read_cached(where, content_id, settings.base_model)) is not None:
            return hit
    kw = dict(concurrency=settings.concurrency, rpm=settings.count_tokens_rpm, max_attempts=settings.max_attempts)
    if storage.is_gcs(uri) or storage.is_http(uri):
        settings.work_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="count-", dir=settings.work_dir))
        try:
            count = count_file(storage.download(uri, tmp / "data.jsonl"), count_one, settings.base_model, **kw)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        count = count_file(uri, count_one, settings.base_model, **kw)
    for where in cache:
        try:
            write_cached(where, content_id, count)
        except Exception as exc:  # noqa: BLE001 - a cache that cannot be written costs a recount, not the run
            log.warning("token counts of %s not cached in %s: %s", uri, where, exc)
    return count


def estimate_for(settings: Settings, files: list[tuple[str, str, dict]], *,
                 count_one: CountOne | None = None, warn: Callable[[str], None] = print) -> cost.CostEstimate:
    """The cost estimate of tuning on `files` = [(role, uri, check summary)], validation not billed.

    vertex: countTokens counts (cached by content); if the route is missing, the check summaries'
    characters/4 estimate with a warning. local: the estimate from the summaries, labelled as such
    (no download either way: check-tuning-data already scanned the files).
    """
    def estimated(method: str | None, notes: tuple[str, ...] = ()) -> cost.CostEstimate:
        tokens = [cost.FileTokens(role, uri, summary["examples"], summary["estimated_tokens"], billed=role == "train")
                  for role, uri, summary in files]
        est = cost.estimate_tuning_cost(tokens, epochs=settings.epochs, backend=settings.backend, method=method,
                                        price_per_million=settings.price_per_million_training_tokens)
        return replace(est, notes=est.notes + notes)

    if settings.backend != "vertex":
        return estimated(None)
    cache_dir = cache_dirs(settings)
    try:
        count_one = count_one or vertex_counter(settings)
        counts = [(role, uri, _count_uri(settings, uri, count_one, cache_dir)) for role, uri, _ in files]
    except CountTokensUnavailable as exc:
        warning = (f"countTokens is unavailable ({exc}); the cost estimate uses characters/4 instead, which can "
                   "differ from what Vertex bills")
        warn(warning)
        return estimated(f"{cost.ESTIMATE_METHOD}: countTokens unavailable", (warning,))
    tokens = [cost.FileTokens(role, uri, c.examples, c.tokens, billed=role == "train") for role, uri, c in counts]
    est = cost.estimate_tuning_cost(tokens, epochs=settings.epochs, backend="vertex",
                                    method=f"{COUNT_METHOD}, {settings.base_model}",
                                    price_per_million=settings.price_per_million_training_tokens)
    over = [f"{role}: {c.over_limit} example(s) over the {MAX_EXAMPLE_TOKENS:,}-token limit (largest "
            f"{c.max_example_tokens:,}): Vertex truncates or drops them" for role, _, c in counts if c.over_limit]
    return replace(est, notes=est.notes + tuple(over))
