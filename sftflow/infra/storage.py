"""One interface over local paths, `gs://bucket/path` and (read-only) `https://` URIs.

Every write is atomic: locally a temp file in the same directory is renamed into place; on
Cloud Storage an object only appears once its single-shot or resumable upload completes. A
killed run therefore never leaves a partial file that later looks complete.

GCS goes through the google-cloud-storage client of `sftflow.infra.gcs` (credentials resolved once:
the static token, else application-default, else anonymous: public reads only).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from sftflow.infra import gcs
from sftflow.errors import StorageError
from sftflow.infra.progress import ProgressFn

CHUNK = 1 << 20

def is_gcs(uri: str) -> bool:
    return uri.startswith("gs://")


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def join(base: str, *parts: str) -> str:
    """Join URI/path pieces with '/'."""
    out = base.rstrip("/")
    for p in parts:
        out = f"{out}/{p.strip('/')}"
    return out


def name_of(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def split_gcs(uri: str) -> tuple[str, str]:
    if not is_gcs(uri):
        raise StorageError(f"{uri}: not a gs:// URI")
    bucket, _, blob = uri[5:].partition("/")
    if not bucket:
        raise StorageError(f"{uri}: no bucket in URI")
    return bucket, blob


# --------------------------------------------------------------------------- GCS objects


def _blob(uri: str):
    bucket, name = split_gcs(uri)
    return gcs.client().bucket(bucket).blob(name)


def _translate(exc: Exception, uri: str) -> Exception:
    if isinstance(exc, urllib.error.HTTPError):
        if exc.code in (401, 403, 404, 410):
            return StorageError(f"{uri}: HTTP {exc.code} {exc.reason}")
        return exc  # 429 / 5xx stay HTTPError: transient, retried by the tasks
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.NotFound):
        return StorageError(f"{uri}: no such object")
    if isinstance(exc, gexc.Forbidden):
        return StorageError(f"{uri}: permission denied ({exc.message})")
    return exc


# --------------------------------------------------------------------------- reads


def exists(uri: str) -> bool:
    if is_gcs(uri):
        return _blob(uri).exists()
    if is_http(uri):
        req = urllib.request.Request(uri, method="HEAD")
        try:
            with urllib.request.urlopen(req, timeout=30):
                return True
        except Exception:
            return False
    return Path(uri).is_file()


def read_bytes(uri: str) -> bytes:
    if is_gcs(uri):
        try:
            return _blob(uri).download_as_bytes()
        except Exception as exc:
            raise _translate(exc, uri) from exc
    if is_http(uri):
        try:
            with urllib.request.urlopen(uri, timeout=60) as r:
                return r.read()
        except urllib.error.HTTPError as exc:
            raise _translate(exc, uri) from exc
    try:
        return Path(uri).read_bytes()
    except FileNotFoundError:
        raise StorageError(f"{uri}: no such file") from None


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def md5_of_file(path: str | Path) -> str:
    """Base64 MD5 of a local file, the same form Cloud Storage reports as `md5_hash`."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return base64.b64encode(h.digest()).decode()


def sha256_of_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(uri: str) -> str:
    """A cheap string that changes whenever the content behind `uri` changes.

    Local: sha256 of the bytes. GCS: the object's md5 and generation (no download).
    HTTP: ETag / Last-Modified / length where the server sends them, else a content hash.
    """
    if is_gcs(uri):
        blob = _blob(uri)
        try:
            blob.reload()
        except Exception as exc:
            raise _translate(exc, uri) from exc
        return f"gcs:{blob.md5_hash}:{blob.generation}"
    if is_http(uri):
        req = urllib.request.Request(uri, method="HEAD")
        with urllib.request.urlopen(req, timeout=30) as r:
            tag = r.headers.get("ETag") or r.headers.get("Last-Modified")
            if tag:
                return f"http:{tag}:{r.headers.get('Content-Length')}"
        return "sha256:" + hashlib.sha256(read_bytes(uri)).hexdigest()
    p = Path(uri)
    if not p.is_file():
        raise StorageError(f"{uri}: no such file")
    return "sha256:" + sha256_of_file(p)


def md5(uri: str) -> str | None:
    """Base64 MD5 of the content at `uri`, None when it does not exist."""
    if is_gcs(uri):
        blob = _blob(uri)
        try:
            blob.reload()
        except Exception:
            return None
        return blob.md5_hash
    p = Path(uri)
    return md5_of_file(p) if p.is_file() else None


def list_uris(prefix: str) -> list[str]:
    """Every file/object under a folder, recursively, sorted.

    The folder is always closed with '/': listing `runs/exp` never yields `runs/exp2/...`
    or `runs/exp-old/...` (Cloud Storage lists by plain text prefix otherwise).
    """
    if is_gcs(prefix):
        bucket, name = split_gcs(prefix)
        if name and not name.endswith("/"):
            name += "/"
        return sorted(
            f"gs://{bucket}/{b.name}" for b in gcs.client().list_blobs(bucket, prefix=name)
        )
    p = Path(prefix)
    if p.is_file():
        return [str(p)]
    return sorted(str(f) for f in p.rglob("*") if f.is_file())


# --------------------------------------------------------------------------- writes


@contextmanager
def _atomic_local(path: Path) -> Iterator[IO[bytes]]:
    """Write to a temp file beside `path`, fsync, then rename; nothing is left on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_local_writer(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Stream into a local file that only appears, complete, when the block ends cleanly."""
    with _atomic_local(Path(path)) as f:
        if "b" in mode:
            yield f
        else:
            import io

            text = io.TextIOWrapper(f, encoding="utf-8", newline="")
            yield text
            text.flush()
            text.detach()


def write_bytes(uri: str, data: bytes, content_type: str | None = None) -> str:
    if is_gcs(uri):
        try:
            _blob(uri).upload_from_string(data, content_type=content_type)
        except Exception as exc:
            raise _translate(exc, uri) from exc
        return uri
    if is_http(uri):
        raise StorageError(f"{uri}: https:// URIs are read-only")
    with _atomic_local(Path(uri)) as f:
        f.write(data)
    return uri


def write_text(uri: str, text: str, content_type: str = "text/plain") -> str:
    return write_bytes(uri, text.encode("utf-8"), content_type)


def upload_file(path: str | Path, uri: str, content_type: str | None = None) -> str:
    """Copy a local file to `uri` (GCS: resumable upload above 8 MB, else single-shot)."""
    if is_gcs(uri):
        blob = _blob(uri)
        blob.chunk_size = 8 * CHUNK if os.path.getsize(path) > 8 * CHUNK else None
        try:
            blob.upload_from_filename(str(path), content_type=content_type)
        except Exception as exc:
            raise _translate(exc, uri) from exc
        return uri
    if Path(uri).resolve() == Path(path).resolve():
        return uri
    with _atomic_local(Path(uri)) as f, open(path, "rb") as src:
        shutil.copyfileobj(src, f, CHUNK)
    return uri


def download(uri: str, path: str | Path, on_progress: ProgressFn | None = None) -> Path:
    """Fetch `uri` into a local file atomically: a killed download leaves nothing behind."""
    dest = Path(path)
    with _atomic_local(dest) as f:
        if is_gcs(uri):
            blob = _blob(uri)
            try:
                blob.reload()
                total = blob.size
                blob.download_to_file(f)
            except Exception as exc:
                raise _translate(exc, uri) from exc
            if on_progress:
                on_progress(total or 0, total, {})
        elif is_http(uri):
            try:
                r = urllib.request.urlopen(uri, timeout=60)
            except urllib.error.HTTPError as exc:
                raise _translate(exc, uri) from exc
            with r:
                total = int(r.headers.get("Content-Length") or 0) or None
                done = 0
                for chunk in iter(lambda: r.read(CHUNK), b""):
                    f.write(chunk)
                    done += len(chunk)
                    if on_progress:
                        on_progress(done, total, {})
        else:
            src = Path(uri)
            if not src.is_file():
                raise StorageError(f"{uri}: no such file")
            total = src.stat().st_size
            done = 0
            with open(src, "rb") as s:
                for chunk in iter(lambda: s.read(CHUNK), b""):
                    f.write(chunk)
                    done += len(chunk)
                    if on_progress:
                        on_progress(done, total, {})
    return dest


def create_if_absent(uri: str, data: bytes, content_type: str = "application/json") -> bool:
    """Write `data` at `uri` only if nothing is there yet; True if this call created it.

    Exactly one of several concurrent callers (processes, machines) wins. Cloud Storage: an
    upload with the precondition `if_generation_match=0` ("no live object"), see
    https://cloud.google.com/storage/docs/request-preconditions. Locally: the complete content
    goes to a temp file that is then hard-linked to the name — link(2) fails if the name exists,
    like O_CREAT|O_EXCL, but a reader never sees a half-written file.
    """
    if is_gcs(uri):
        from google.api_core import exceptions as gexc

        try:
            _blob(uri).upload_from_string(data, content_type=content_type, if_generation_match=0)
        except gexc.PreconditionFailed:
            return False
        except Exception as exc:
            raise _translate(exc, uri) from exc
        return True
    if is_http(uri):
        raise StorageError(f"{uri}: https:// URIs are read-only")
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


def delete(uri: str) -> bool:
    """Delete one file/object; False if it was not there."""
    if is_gcs(uri):
        from google.api_core import exceptions as gexc

        try:
            _blob(uri).delete()
            return True
        except gexc.NotFound:
            return False
    p = Path(uri)
    if p.is_file():
        p.unlink()
        return True
    return False
