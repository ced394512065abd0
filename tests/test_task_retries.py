"""Prefect task retries (tasks.common.retry_transient) against a real transient failure: the
download task fetches from an HTTP server on 127.0.0.1 that answers 503 before it answers 200."""

from __future__ import annotations

import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sftflow.errors import StorageError
from tasks.data import download

pytestmark = pytest.mark.slow  # two real retry delays (2 s and 4 s, jittered) and a Prefect start

BODY = b"input_text,output_text\nan article,a summary\n"


class ScriptedFiles:
    """GET answers follow a script of statuses per path (the last one repeats); HEAD always answers
    as the final GET would (download's cache key reads ETag and length first)."""

    def __init__(self, scripts: dict[str, list[int]]):
        self.scripts = scripts
        self.gets: Counter[str] = Counter()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, code: int, body: bool) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "text/csv")
                self.send_header("Content-Length", str(len(BODY) if code == 200 else 0))
                self.send_header("ETag", '"v1"')
                self.end_headers()
                if body and code == 200:
                    self.wfile.write(BODY)

            def do_HEAD(self):  # noqa: N802
                self._answer(owner.scripts[self.path][-1], body=False)

            def do_GET(self):  # noqa: N802
                script = owner.scripts[self.path]
                n = owner.gets[self.path]
                owner.gets[self.path] += 1
                self._answer(script[min(n, len(script) - 1)], body=True)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_retries_503_then_succeeds(tmp_path):
    with ScriptedFiles({"/flaky/test.csv": [503, 503, 200]}) as files:
        path = download(f"{files.url}/flaky/test.csv", tmp_path / "downloads")
    with open(path, "rb") as fh:
        assert fh.read() == BODY
    assert files.gets["/flaky/test.csv"] == 3  # two 503s retried, then the file


def test_download_does_not_retry_404(tmp_path):
    with ScriptedFiles({"/gone/test.csv": [404]}) as files:
        with pytest.raises(StorageError) as err:
            download(f"{files.url}/gone/test.csv", tmp_path / "downloads")
    assert str(err.value) == f"{files.url}/gone/test.csv: HTTP 404 Not Found"
    assert files.gets["/gone/test.csv"] == 1  # bad input is not retried
