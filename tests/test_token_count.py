"""Token counts that match the bill: countTokens against the Vertex-shaped server, its cache by content,
the characters/4 fallback when the route is missing, and what the test server refuses."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from sftflow.cost import estimate as cost, token_count
from sftflow.errors import BackendError, TransientError
from sftflow.infra import storage
from sftflow.data.rules import validate_contents_file
from tests.servers.vertex_fixtures import TEST_TOKEN, upload_datasets
from tests.servers.vertex_server import count_text_tokens

pytestmark = pytest.mark.usefixtures("token_in_env")

SYSTEM = "Summarize the article in one sentence."
USER = "Article: the cat sat on the mat, and then it slept. It was a very long day for the cat!"
MODEL = "The cat slept."
LINE = json.dumps({"systemInstruction": {"parts": [{"text": SYSTEM}]},
                   "contents": [{"role": "user", "parts": [{"text": USER}]},
                                {"role": "model", "parts": [{"text": MODEL}]}]}) + "\n"
PER_EXAMPLE = sum(count_text_tokens(t) for t in (SYSTEM, USER, MODEL))


def _counts(server) -> int:
    return server.count("POST", ":countTokens")


def _files(tmp_path, train: str, val: str) -> list[tuple[str, str, dict]]:
    """[(role, uri, summary)] as check-tuning-data makes them (the summary's estimate: characters/4)."""
    path = tmp_path / "line.jsonl"
    out = []
    for role, uri, n in (("train", train, 3), ("val", val, 1)):
        path.write_text(LINE * n, encoding="utf-8")
        rep = validate_contents_file(path, role)
        out.append((role, uri, {"kind": role, "examples": rep.examples, "estimated_tokens": rep.estimated_tokens}))
    return out


def test_vertex_estimate_counts_every_example_with_count_tokens_once_per_content(
        make_vertex_server, vertex_settings_for, gcs_bucket, tmp_path):
    server = make_vertex_server()
    _, train, val = upload_datasets(gcs_bucket, LINE.encode())
    s = vertex_settings_for(server, local_root=tmp_path / "root", epochs=2, bucket=gcs_bucket)
    files = _files(tmp_path, train, val)
    assert PER_EXAMPLE != files[0][2]["estimated_tokens"] // 3  # the two methods give different numbers here

    est = token_count.estimate_for(s, files)
    assert _counts(server) == 4  # every example of both files, one request each
    assert est.method == f"{token_count.COUNT_METHOD}, gemini-2.5-flash"
    by_role = {f.role: f for f in est.files}
    assert (by_role["train"].examples, by_role["train"].tokens) == (3, 3 * PER_EXAMPLE)
    assert (by_role["val"].examples, by_role["val"].tokens, by_role["val"].billed) == (1, PER_EXAMPLE, False)
    assert est.billed_tokens == 2 * 3 * PER_EXAMPLE
    assert est.total_usd == pytest.approx(est.billed_tokens * 5.0 / 1e6)
    text = "\n".join(est.lines())
    assert f"train: {train}: 3 examples, {3 * PER_EXAMPLE} tokens, {6 * PER_EXAMPLE} tokens × epochs" in text
    assert cost.PRICE_SOURCE in text

    # The same content again (a rerun, or another run on the same data): no request at all.
    again = token_count.estimate_for(s, files)
    assert again == est and _counts(server) == 4
    # Changed content misses the cache: only the changed file is counted.
    _, train2, _ = upload_datasets(f"{gcs_bucket}/other", (LINE * 2).encode())
    token_count.estimate_for(s, [(files[0][0], train2, files[0][2]), files[1]])
    assert _counts(server) == 4 + 6
    # Another machine (its own empty work area) on the same bucket: the counts come from the bucket.
    other = vertex_settings_for(server, local_root=tmp_path / "other-machine", epochs=2, bucket=gcs_bucket)
    assert token_count.estimate_for(other, files) == est and _counts(server) == 4 + 6


def test_missing_route_falls_back_to_the_estimate_with_a_warning(make_vertex_server, vertex_settings_for,
                                                                 gcs_bucket, tmp_path):
    server = make_vertex_server(count_tokens_route=False)
    _, train, val = upload_datasets(gcs_bucket, LINE.encode())
    s = vertex_settings_for(server, local_root=tmp_path / "root", bucket=gcs_bucket)
    files = _files(tmp_path, train, val)
    warnings: list[str] = []
    est = token_count.estimate_for(s, files, warn=warnings.append)
    assert 1 <= _counts(server) <= 3  # the first refusal stops the count (requests in flight finish); val never asked
    assert [f.tokens for f in est.files] == [files[0][2]["estimated_tokens"], files[1][2]["estimated_tokens"]]
    assert est.method == f"{cost.ESTIMATE_METHOD}: countTokens unavailable"
    [warning] = warnings
    assert "countTokens is unavailable" in warning and "404" in warning and warning in est.notes
    assert not list((tmp_path / "root" / "work" / "token-counts").glob("*.json"))  # nothing cached
    assert not storage.list_uris(f"{s.storage_root}/token-counts")  # not in the bucket either


def test_local_backend_uses_the_estimate_labelled_and_asks_nothing(tmp_path):
    from sftflow.config import Settings

    s = Settings(_env_file=None, backend="local", local_root=tmp_path / "root")
    est = token_count.estimate_for(s, _files(tmp_path, "t.jsonl", "v.jsonl"),
                                   count_one=lambda ex: pytest.fail("local never counts with an API"))
    assert est.method == cost.LOCAL_METHOD and est.backend == "local"


def test_count_examples_keeps_order_paces_and_retries_transient_errors():
    calls: dict[str, int] = {}
    slept: list[float] = []

    def count_one(ex: dict) -> int:
        n = calls[ex["id"]] = calls.get(ex["id"], 0) + 1
        if ex["id"] == "b" and n < 3:
            raise TransientError("429", kind="429 RESOURCE_EXHAUSTED", retry_after=0.01)
        return len(ex["id"]) * 10 + ord(ex["id"][0]) - ord("a")

    out = token_count.count_examples(count_one, [{"id": c} for c in "abcde"], concurrency=3, rpm=60_000,
                                     max_attempts=4, sleep=slept.append)
    assert out == [10, 11, 12, 13, 14] and calls["b"] == 3
    assert slept.count(0.01) == 2  # the server's Retry-After, not a guess
    calls.clear()
    with pytest.raises(TransientError):
        token_count.count_examples(count_one, [{"id": "b"}], concurrency=1, rpm=60_000, max_attempts=1)

    def refused(ex: dict) -> int:
        raise BackendError("400 bad", kind="400 INVALID_ARGUMENT")

    with pytest.raises(BackendError):
        token_count.count_examples(refused, [{"id": "a"}] * 3, concurrency=2, rpm=60_000, max_attempts=3)


def _post(server, model: str, body) -> tuple[int, dict]:
    url = f"{server.base_url}/v1beta1/{server.parent}/publishers/google/models/{model}:countTokens"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {TEST_TOKEN}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_test_server_refuses_what_vertex_refuses_on_count_tokens(make_vertex_server):
    server = make_vertex_server()
    ok = {"contents": [{"role": "user", "parts": [{"text": "Hello, world!"}]}]}
    assert _post(server, "gemini-2.5-flash", ok) == (200, {"totalTokens": 4, "totalBillableCharacters": 13})
    code, body = _post(server, "gemini-9-ultra", ok)
    assert code == 404 and "gemini-9-ultra" in body["error"]["message"]
    bad_role = {"contents": [{"role": "bot", "parts": [{"text": "x"}]}]}
    for bad in ({"contents": []}, {"contens": ok["contents"]}, bad_role, [1, 2]):
        code, body = _post(server, "gemini-2.5-flash", bad)
        assert code == 400 and body["error"]["status"] == "INVALID_ARGUMENT", bad
    server.count_tokens_route = False
    code, body = _post(server, "gemini-2.5-flash", ok)
    assert code == 404 and "No route" in body["error"]["message"]
