"""evaluate(): retries, blocked/empty answers, checkpoint resume, ordering, rate limiting.

Unit tests use a plain-Python Generator (our own interface, not an SDK mock); the tests at
the end run the real VertexGenerator against the Vertex-shaped test server, including a
subprocess killed with SIGKILL mid-run and resumed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from sftflow.backends.base import Generation, GenerationParams
from sftflow.evaluation.checkpoint import Checkpoint
from sftflow.data.testset import TestExample
from sftflow.errors import BackendError, CheckpointError, TransientError
from sftflow.evaluation.engine import RateLimiter, evaluate
from sftflow.evaluation.results import ExampleResult
from sftflow.evaluation.rouge import METRICS

ROOT = Path(__file__).resolve().parents[1]
PARAMS = GenerationParams()


def make_examples(n: int, special: dict[int, str] | None = None) -> list[TestExample]:
    special = special or {}
    out = []
    for i in range(n):
        tag = special.get(i, "")
        article = f"Article {i}. The quick brown fox number {i} jumps over the lazy dog. It rests."
        out.append(TestExample(f"ex{i:03d}", f"Summarize: {tag}{article}", f"Fox {i} jumps over the dog.", i + 2))
    return out


class FakeGenerator:
    """Answers with the first sentence after 'Summarize:'; fails transiently at `fail_rate`
    (seeded); '[[BLOCK]]' → blocked, '[[EMPTY]]' → empty text, '[[FATAL]]' → BackendError."""

    def __init__(self, model: str = "fake-model", fail_rate: float = 0.0, seed: int = 0, delay: float = 0.0):
        self.model = model
        self.fail_rate = fail_rate
        self.delay = delay
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.successes: Counter[str] = Counter()
        self.starts: list[float] = []

    def generate(self, prompt: str, params: GenerationParams) -> Generation:
        with self._lock:
            self.calls[prompt] += 1
            self.starts.append(time.monotonic())
            fail = self._rng.random() < self.fail_rate
        if self.delay:
            time.sleep(self.delay)
        if "[[FATAL]]" in prompt:
            raise BackendError("404 model not found")
        if fail:
            raise TransientError("429 RESOURCE_EXHAUSTED")
        with self._lock:
            self.successes[prompt] += 1
        if "[[BLOCK]]" in prompt:
            return Generation("", "SAFETY", 0.01, prompt_tokens=10, blocked=True)
        if "[[EMPTY]]" in prompt:
            return Generation("", "STOP", 0.01, prompt_tokens=10, output_tokens=0)
        body = prompt.split("Summarize:", 1)[1]
        text = body.split(".")[1].strip() + "."
        return Generation(text, "STOP", 0.01, prompt_tokens=len(prompt) // 4, output_tokens=len(text) // 4)


def run(gen, examples, ckpt, **kw):
    opts = dict(params=PARAMS, checkpoint=ckpt, concurrency=8, rpm=1e6, max_attempts=10, sleep=lambda s: None)
    opts.update(kw)
    return evaluate(gen, examples, **opts)


def test_transient_failures_every_example_scored_exactly_once(tmp_path):
    examples = make_examples(60)
    gen = FakeGenerator(fail_rate=0.3, seed=1)
    progress = []
    results = run(gen, examples, tmp_path / "c.jsonl", on_progress=lambda d, t, i: progress.append((d, t, i)))
    assert [r.id for r in results] == [e.id for e in examples]
    assert all(r.scored and r.error is None for r in results)
    assert all(gen.successes[e.input_text] == 1 for e in examples)
    retries = sum(gen.calls.values()) - len(examples)
    assert retries > 5  # the 30% faults really happened ...
    assert progress[-1] == (60, 60, {"errors": 0, "retries": retries, "blocked": 0, "empty": 0, "resumed": 0})
    assert [d for d, _, _ in progress] == list(range(0, 61))
    assert all(r.attempts == gen.calls[e.input_text] for r, e in zip(results, examples))
    # ... and each example is in the checkpoint once
    lines = (tmp_path / "c.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == [e.id for e in examples]


def test_exhausted_retries_and_backend_errors_are_recorded_not_dropped(tmp_path):
    examples = make_examples(6, {2: "[[FATAL]] "})
    gen = FakeGenerator(fail_rate=1.0)
    delays = []
    results = run(gen, examples, tmp_path / "c.jsonl", max_attempts=3, sleep=delays.append, concurrency=1)
    assert len(results) == 6 and all(r.error and r.scores is None and not r.scored for r in results)
    assert results[2].error.startswith("BackendError") and results[2].attempts == 1
    assert results[0].error.startswith("TransientError after 3 attempts") and results[0].attempts == 3
    assert gen.calls[examples[2].input_text] == 1  # permanent errors are not retried
    # full jitter: the delay after attempt k lies in [0, base * 2^(k-1)] (base 1 s); one example at a
    # time, so the delays come as (after attempt 1, after attempt 2) per transiently failing example
    assert len(delays) == 5 * 2
    assert all(0 <= d <= 1.0 for d in delays[0::2]) and all(0 <= d <= 2.0 for d in delays[1::2])
    assert any(d > 1.0 for d in delays[1::2])  # the second delay really comes from the doubled range
    # errored examples are asked again on the next run
    gen2 = FakeGenerator()
    again = run(gen2, examples, tmp_path / "c.jsonl")
    assert sum(gen2.calls.values()) == 6
    assert [r.error is None for r in again] == [True, True, False, True, True, True]


def test_blocked_and_empty_answers_recorded_and_scored_zero(tmp_path):
    examples = make_examples(5, {1: "[[BLOCK]] ", 3: "[[EMPTY]] "})
    results = run(FakeGenerator(), examples, tmp_path / "c.jsonl")
    blocked, empty = results[1], results[3]
    assert blocked.blocked and blocked.output == "" and blocked.finish_reason == "SAFETY"
    assert blocked.scores == {m: 0.0 for m in METRICS} and blocked.error is None and blocked.scored
    assert empty.empty and not empty.blocked and empty.finish_reason == "STOP"
    assert empty.scores == {m: 0.0 for m in METRICS}
    assert results[0].scores["rouge1"] > 0.5 and not results[0].empty


def test_checkpoint_resume_skips_done_ids(tmp_path):
    examples = make_examples(20)
    ckpt = tmp_path / "c.jsonl"
    first = run(FakeGenerator(), examples[:12], ckpt)
    gen = FakeGenerator()
    progress = []
    results = run(gen, examples, ckpt, on_progress=lambda d, t, i: progress.append((d, i["resumed"])))
    assert sum(gen.calls.values()) == 8
    assert set(gen.calls) == {e.input_text for e in examples[12:]}
    assert progress[0] == (12, 12)
    assert [r.to_dict() for r in results[:12]] == [r.to_dict() for r in first]
    assert [r.id for r in results] == [e.id for e in examples]
    # a third run asks nothing
    gen3 = FakeGenerator()
    assert [r.to_dict() for r in run(gen3, examples, ckpt)] == [r.to_dict() for r in results]
    assert not gen3.calls


def test_truncated_last_line_tolerated_and_repaired(tmp_path):
    examples = make_examples(10)
    ckpt = tmp_path / "c.jsonl"
    full = run(FakeGenerator(), examples, ckpt)
    data = ckpt.read_bytes()
    lines = data.splitlines(keepends=True)
    cut = b"".join(lines[:7]) + lines[7][: len(lines[7]) // 2]  # a kill mid-write
    ckpt.write_bytes(cut)
    gen = FakeGenerator()
    results = run(gen, examples, ckpt)
    done_before = {json.loads(line)["id"] for line in lines[:7]}
    assert set(gen.calls) == {e.input_text for e in examples if e.id not in done_before}
    assert [r.scores for r in results] == [r.scores for r in full]
    # the partial line was cut away, so every line parses now
    assert all(json.loads(line) for line in ckpt.read_text().splitlines())
    assert len(Checkpoint(ckpt).load()) == 10


def test_corrupt_middle_line_names_file_and_line(tmp_path):
    ckpt = tmp_path / "c.jsonl"
    run(FakeGenerator(), make_examples(3), ckpt)
    lines = ckpt.read_text().splitlines()
    ckpt.write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    with pytest.raises(CheckpointError, match=r"c\.jsonl:2: not a result record"):
        Checkpoint(ckpt).load()


def test_checkpoint_of_other_model_refused(tmp_path):
    ckpt = tmp_path / "c.jsonl"
    run(FakeGenerator(model="a"), make_examples(2), ckpt)
    with pytest.raises(CheckpointError, match="holds results of model"):
        run(FakeGenerator(model="b"), make_examples(2), ckpt)


def test_results_in_example_order_regardless_of_completion(tmp_path):
    examples = make_examples(16)

    class Reversed(FakeGenerator):
        def generate(self, prompt, params):
            i = int(prompt.split("Article ")[1].split(".")[0])
            time.sleep(0.01 * (16 - i))  # later examples finish first
            return super().generate(prompt, params)

    results = run(Reversed(), examples, tmp_path / "c.jsonl", concurrency=16)
    assert [r.id for r in results] == [e.id for e in examples]
    file_order = [json.loads(line)["id"] for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert file_order != [e.id for e in examples]  # completion order really differed


def test_failing_progress_callback_does_not_stop_evaluation(tmp_path):
    def boom(done, total, info):
        raise RuntimeError("artifact API down")

    results = run(FakeGenerator(), make_examples(5), tmp_path / "c.jsonl", on_progress=boom)
    assert all(r.scored for r in results)


def test_duplicate_ids_rejected_with_lines(tmp_path):
    ex = make_examples(2)
    dup = [ex[0], TestExample(ex[0].id, "x", "y", 9)]
    with pytest.raises(ValueError, match="appears twice.*lines 2 and 9"):
        run(FakeGenerator(), dup, tmp_path / "c.jsonl")


def test_rate_limit_respected(tmp_path):
    gen = FakeGenerator()
    t0 = time.monotonic()
    run(gen, make_examples(20), tmp_path / "c.jsonl", rpm=600, concurrency=8)
    elapsed = time.monotonic() - t0
    assert elapsed >= 1.85
    gaps = [b - a for a, b in zip(sorted(gen.starts), sorted(gen.starts)[1:])]
    assert min(gaps) >= 0.09


def test_rate_limiter_slots_with_fake_clock():
    now = [100.0]
    waits = []
    lim = RateLimiter(rpm=120, clock=lambda: now[0], sleep=waits.append)
    for _ in range(4):
        lim.acquire()
    assert waits == [0.5, 1.0, 1.5]  # the first goes at once, then 0.5 s apart
    now[0] += 10  # idle time is not banked beyond the bucket (burst=1)
    waits.clear()
    lim.acquire()
    lim.acquire()
    assert waits == [0.5]


# --------------------------------------------------------------------------- real SDK + test server

@pytest.fixture
def vertex():
    import sftflow.backends.vertex

    return sftflow.backends.vertex


@pytest.fixture
def server_mod():
    import tests.servers.vertex_server

    return tests.servers.vertex_server


def _settings(base_url: str):
    from sftflow.config import Settings

    from tests.servers.vertex_server import TEST_TOKEN

    return Settings(backend="vertex", project="test-project", bucket="b", vertex_base_url=base_url,
                    vertex_access_token=TEST_TOKEN)


def _ok_prompts(server, since: float = 0.0) -> Counter[str]:
    """Prompt text of each generateContent request answered 200 (arrived after `since`)."""
    out: Counter[str] = Counter()
    for r in list(server.requests):
        if ":generateContent" in r["path"] and r["status"] == 200 and r["time"] >= since:
            out["\n".join(p["text"] for c in r["body"]["contents"] for p in c["parts"] if "text" in p)] += 1
    return out


def test_vertex_faults_every_example_scored_once(tmp_path, vertex, server_mod):
    examples = make_examples(40, {5: "[[BLOCK]] ", 6: "[[EMPTY]] "})
    with server_mod.VertexTestServer(fault_rate=0.3, seed=3) as server:
        gen = vertex.VertexGenerator(_settings(server.base_url), "gemini-2.5-flash")
        results = run(gen, examples, tmp_path / "c.jsonl", backoff_base=0.01, backoff_cap=0.05,
                      sleep=time.sleep)
        ok = _ok_prompts(server)
        faults = sum(1 for r in server.requests if r["status"] in (429, 503))
    assert all(r.error is None for r in results), [r.error for r in results if r.error]
    assert all(ok[e.input_text] == 1 for e in examples)
    assert faults >= 5 and len(server.requests) == len(examples) + faults  # each fault cost exactly one retry
    assert results[5].blocked and results[5].output == ""
    assert results[6].empty and results[6].scores["rougeL"] == 0.0
    assert results[0].output and results[0].scores["rouge1"] > 0


_CHILD = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {root!r})
    from sftflow.backends.base import GenerationParams
    from sftflow.backends.vertex import VertexGenerator
    from sftflow.config import Settings
    from sftflow.evaluation.engine import evaluate
    from tests.servers.vertex_server import TEST_TOKEN
    from tests.test_evaluation import make_examples
    s = Settings(backend="vertex", project="test-project", bucket="b",
                 vertex_base_url={url!r}, vertex_access_token=TEST_TOKEN)
    res = evaluate(VertexGenerator(s, "gemini-2.5-flash"), make_examples({n}), params=GenerationParams(),
                   checkpoint={ckpt!r}, concurrency=4, rpm=1e6, max_attempts=5)
    print(json.dumps([r.to_dict() for r in res]))
""")


@pytest.mark.slow
def test_killed_subprocess_resumes_and_requests_only_missing(tmp_path, vertex, server_mod):
    n = 40
    ckpt = tmp_path / "c.jsonl"
    examples = make_examples(n)
    with server_mod.VertexTestServer(latency_s=0.1) as server:
        code = _CHILD.format(root=str(ROOT), url=server.base_url, n=n, ckpt=str(ckpt))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # kill once part of the work is checkpointed
            if ckpt.exists() and len(ckpt.read_bytes().splitlines()) >= 12:
                break
            if child.poll() is not None:
                pytest.fail(f"child ended early: {child.stderr.read().decode()[-2000:]}")
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL
        done_ids = {r.id for r in Checkpoint(ckpt).load().values()}
        assert 12 <= len(done_ids) < n
        # The rerun talks to a second server: its request log holds the rerun's requests alone, however
        # late the first server handles what the killed child had in flight (no time window to guess).
        with server_mod.VertexTestServer(latency_s=0.1) as resume_server:
            resume_code = _CHILD.format(root=str(ROOT), url=resume_server.base_url, n=n, ckpt=str(ckpt))
            rerun = subprocess.run([sys.executable, "-c", resume_code], cwd=ROOT, env=env, capture_output=True,
                                   timeout=120)
            assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
            second = _ok_prompts(resume_server)
        first = _ok_prompts(server)
    final = [ExampleResult.from_dict(d) for d in json.loads(rerun.stdout)]
    # the rerun asked exactly the examples missing from the checkpoint, each once
    missing = {e.input_text for e in examples if e.id not in done_ids}
    assert set(second) == missing and all(v == 1 for v in second.values())
    # every checkpointed example was answered before the kill, once
    assert all(first[e.input_text] == 1 for e in examples if e.id in done_ids)
    # final table: all examples, in order, identical to an uninterrupted run
    assert [r.id for r in final] == [e.id for e in examples]
    with server_mod.VertexTestServer() as server2:
        gen = vertex.VertexGenerator(_settings(server2.base_url), "gemini-2.5-flash")
        clean = run(gen, examples, tmp_path / "clean.jsonl", concurrency=4)
    assert [(r.id, r.output, r.scores) for r in final] == [(r.id, r.output, r.scores) for r in clean]
