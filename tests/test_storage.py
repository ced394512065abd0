"""Storage against real local files and a real GCS emulator (no client mocks)."""

import base64
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sftflow.infra import storage


def test_local_write_is_atomic_and_leaves_no_temp(tmp_path):
    dest = tmp_path / "a" / "b.txt"
    storage.write_text(str(dest), "hello")
    assert dest.read_text() == "hello"
    assert [p.name for p in dest.parent.iterdir()] == ["b.txt"]


def test_failed_local_write_leaves_nothing(tmp_path):
    dest = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError):
        with storage.atomic_local_writer(dest, "w") as f:
            f.write("partial line\n")
            raise RuntimeError("boom")
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_failed_rewrite_keeps_earlier_result(tmp_path):
    dest = tmp_path / "out.txt"
    storage.write_text(str(dest), "good")
    with pytest.raises(RuntimeError):
        with storage.atomic_local_writer(dest, "w") as f:
            f.write("bad")
            raise RuntimeError("boom")
    assert dest.read_text() == "good"


def test_md5_matches_gcs_form(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(b"abc")
    assert storage.md5_of_file(p) == base64.b64encode(hashlib.md5(b"abc").digest()).decode()


def test_fingerprint_changes_with_content(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text("1")
    a = storage.fingerprint(str(p))
    p.write_text("2")
    assert storage.fingerprint(str(p)) != a


def test_missing_local_file_names_it(tmp_path):
    with pytest.raises(storage.StorageError, match="nope.csv: no such file"):
        storage.read_bytes(str(tmp_path / "nope.csv"))


def test_killed_download_leaves_no_file(tmp_path):
    """A download SIGKILLed mid-way leaves neither the destination nor a file that looks complete."""
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(1 << 20) * 64)  # 64 MiB
    dest = tmp_path / "dl" / "big.bin"
    code = textwrap.dedent(
        f"""
        import time
        from sftflow.infra import storage
        def slow(done, total, info):
            print(done, flush=True)
            time.sleep(0.05)
        storage.download({str(src)!r}, {str(dest)!r}, on_progress=slow)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()  # first chunk written
    proc.stdout.readline()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not dest.exists()
    storage.download(str(src), dest)  # a rerun completes
    assert storage.md5_of_file(dest) == storage.md5_of_file(src)


def test_gcs_roundtrip(gcs_bucket, tmp_path):
    uri = storage.join(gcs_bucket, "datasets", "train", "t.jsonl")
    assert not storage.exists(uri)
    src = tmp_path / "t.jsonl"
    src.write_text('{"a":1}\n')
    storage.upload_file(src, uri)
    assert storage.exists(uri)
    assert storage.md5(uri) == storage.md5_of_file(src)
    assert storage.read_text(uri) == '{"a":1}\n'
    out = storage.download(uri, tmp_path / "back.jsonl")
    assert out.read_text() == '{"a":1}\n'
    assert storage.list_uris(storage.join(gcs_bucket, "datasets")) == [uri]
    fp = storage.fingerprint(uri)
    storage.write_text(uri, '{"a":2}\n')
    assert storage.fingerprint(uri) != fp
    assert storage.delete(uri) is True
    assert storage.delete(uri) is False
    assert not storage.exists(uri)


def test_gcs_large_resumable_upload(gcs_bucket, tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(10 * (1 << 20)))
    uri = storage.join(gcs_bucket, "big.bin")
    storage.upload_file(src, uri)
    assert storage.md5(uri) == storage.md5_of_file(src)


def test_gcs_missing_object_names_it(gcs_bucket):
    with pytest.raises(storage.StorageError, match="no such object"):
        storage.read_bytes(storage.join(gcs_bucket, "missing.csv"))


def test_https_source_downloads_atomically(tmp_path):
    """http(s):// sources stream into the work area; a 404 names the URL and leaves nothing."""
    import functools
    import http.server
    import threading

    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "train.jsonl").write_text('{"messages": []}\n')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "srv"))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        out = storage.download(f"{base}/train.jsonl", tmp_path / "dl" / "train.jsonl")
        assert out.read_text() == '{"messages": []}\n'
        assert storage.fingerprint(f"{base}/train.jsonl").startswith("http:")
        with pytest.raises(storage.StorageError, match="missing.jsonl: HTTP 404"):
            storage.download(f"{base}/missing.jsonl", tmp_path / "dl" / "missing.jsonl")
        assert not (tmp_path / "dl" / "missing.jsonl").exists()
    finally:
        server.shutdown()
