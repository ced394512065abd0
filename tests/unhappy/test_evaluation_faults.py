"""Evaluation under faults: failed requests are never a cached success, names cannot climb out of
the run, cache keys cover every input, Retry-After is honoured, results are JSON, one process per
checkpoint. Real google-genai against the Vertex-shaped server, real processes, the GCS emulator.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path
from typing import get_args

import pytest
from pydantic import SecretStr

from sftflow.infra import layout
from sftflow.backends.base import GenerationParams
from sftflow.evaluation.checkpoint import Checkpoint, CheckpointLock
from sftflow.config import Settings
from sftflow.data.testset import read_test_csv
from sftflow.errors import CheckpointBusy, EvaluationFailed
from sftflow.evaluation.engine import check_error_rate, evaluate
from sftflow.infra.transient import parse_retry_after
from tests.servers.vertex_fixtures import TEST_TOKEN

pytestmark = pytest.mark.usefixtures("token_in_env")

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- helpers


def marker(i: int) -> str:
    """A string found in example i's prompt only (what the server's prompt faults match)."""
    return f"Marker M{i:03d}."


def write_test_csv(path: Path, n: int) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["input_text", "output_text"])
        for i in range(n):
            w.writerow([f"Summarize this article: Article {i}. {marker(i)} The fox {i} jumps over the dog. It rests.",
                        f"Fox {i} jumps over the dog."])
    return path


def generate_requests(server, since: float = 0.0) -> list[dict]:
    return [r for r in list(server.requests) if ":generateContent" in r["path"] and r["time"] >= since]


def prompt_of(request: dict) -> str:
    return "\n".join(p["text"] for c in request["body"]["contents"] for p in c["parts"] if "text" in p)


def asked_markers(server, since: float = 0.0) -> list[str]:
    """Marker of every generateContent request since `since`, sorted (duplicates kept)."""
    out = []
    for r in generate_requests(server, since):
        text = prompt_of(r)
        out.append(text[text.index("Marker M"):][:12])
    return sorted(out)


def cli_env(server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFTFLOW_")}
    env.update(PYTHONPATH=str(ROOT), SFTFLOW_VERTEX_BASE_URL=server.base_url,
               SFTFLOW_VERTEX_ACCESS_TOKEN=TEST_TOKEN)
    return env


def run_cli(args: list[str], server, cwd: Path, timeout: float = 240,
            api: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`api`: prefect_api_env, to run on the session's Prefect server rather than a temporary one."""
    return subprocess.run([sys.executable, "-m", "sftflow.cli.main", *args], cwd=cwd,
                          env={**cli_env(server), **(api or {})},
                          capture_output=True, text=True, timeout=timeout)


def vertex_flags(server, bucket: str, local_root: Path) -> list[str]:
    return ["--backend", "vertex", "--project", server.project, "--region", server.location,
            "--bucket", bucket, "--local-root", str(local_root)]


def vertex_config(server, bucket: str, local_root: Path, **more) -> dict:
    return {"backend": "vertex", "project": server.project, "region": server.location, "bucket": bucket,
            "vertex_base_url": server.base_url,
            "local_root": str(local_root), "concurrency": 4, "rpm": 60000, **more}


def cache_records(local_root: Path, bucket: str | None = None) -> list[dict]:
    """Every record in the run's Prefect result folder (and, with a bucket, under <bucket>/prefect-results,
    where a run with a bucket keeps them: tasks/results.py), parsed as JSON (a pickle would raise)."""
    from sftflow.infra import storage

    raws = [p.read_bytes() for p in (local_root / "prefect-results").rglob("*") if p.is_file()]
    if bucket:
        raws += [storage.read_bytes(u) for u in storage.list_uris(f"{bucket}/prefect-results")]
    for raw in raws:
        assert b"pickle" not in raw
    return [json.loads(raw) for raw in raws]


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


# --------------------------------------------------------------------------- item 4: failures are not successes


@pytest.mark.slow
def test_all_401_fails_through_cli_is_not_cached_and_rerun_asks_exactly_the_failed(
        make_vertex_server, gcs_bucket, tmp_path, prefect_api_env):
    server = make_vertex_server(require_token="a-token-nobody-has")  # every request: 401
    csv_path = write_test_csv(tmp_path / "test.csv", 10)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    args = ["evaluate", "--test", str(csv_path), "--samples", "10", "--concurrency", "4", "--rpm", "60000",
            *vertex_flags(server, gcs_bucket, tmp_path / "root")]

    failed = run_cli(args, server, cwd, api=prefect_api_env)
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert "sftflow: error: evaluation of gemini-2.5-flash failed: 10/10 examples ended in errors" in failed.stderr
    assert "10/10 examples: 401 UNAUTHENTICATED: Request had invalid authentication credentials." in failed.stderr
    assert "Traceback" not in failed.stderr.split("sftflow: error:")[-1]
    assert asked_markers(server) == sorted(marker(i) for i in range(10))
    assert not [r for r in cache_records(tmp_path / "root", gcs_bucket) if "results_uri" in json.dumps(r)], \
        "a failed evaluation left a cache record"

    server.require_token = None  # the user fixed the credentials
    fixed_from = time.time()
    fixed = run_cli(args, server, cwd, api=prefect_api_env)
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert asked_markers(server, fixed_from) == sorted(marker(i) for i in range(10))  # each failed one, once
    assert all(r["status"] == 200 for r in generate_requests(server, fixed_from))

    # now a success: served from the cache by a third process, no request at all
    before = len(server.requests)
    again = run_cli(args, server, cwd, api=prefect_api_env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(server.requests) == before
    assert again.stdout == fixed.stdout

    # item 11: the persisted task results of these runs are JSON records, never pickle
    records = cache_records(tmp_path / "root", gcs_bucket)
    assert len([r for r in records if "results_uri" in json.dumps(r)]) == 1
    for record in records:  # a cache record names its serializer; a bare result (a flow's exception) is JSON
        assert "metadata" not in record or record["metadata"]["serializer"]["type"] == "json", record["metadata"]


@pytest.mark.slow
def test_partial_404_below_and_above_max_error_rate(make_vertex_server, gcs_bucket, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.evaluate import evaluate as evaluate_flow
    from tests.flowutil import task_states

    server = make_vertex_server()
    csv_path = write_test_csv(tmp_path / "test.csv", 50)
    config = vertex_config(server, gcs_bucket, tmp_path / "root", test_uri=str(csv_path), samples=50)
    for i in (7, 31):
        server.add_prompt_fault(marker(i), 404)

    # 2/50 = 0.04 <= 0.05: the run succeeds, says so, and is not cached
    state = evaluate_flow(label="part", config=config, return_state=True)
    out = state.result()
    assert out["counts"]["errors"] == 2 and out["counts"]["scored"] == 48
    assert out["errors"] == ["2/50 examples: 404 NOT_FOUND: Injected fault 404 for this prompt (test server)"]
    assert task_states(state)["evaluate-model"] == ["Completed"]
    assert len(asked_markers(server)) == 50

    # a rerun (fault still there) asks exactly the two errored examples again, not the 48 scored
    t1 = time.time()
    again = evaluate_flow(label="part", config=config, return_state=True)
    assert task_states(again)["evaluate-model"] == ["Completed"]  # not a cache hit
    assert asked_markers(server, t1) == [marker(7), marker(31)]

    # fixed: the rerun asks those two once more and the complete result is cached
    server.clear_prompt_faults()
    t2 = time.time()
    fixed = evaluate_flow(label="part", config=config)
    assert fixed["counts"] == {"total": 50, "scored": 50, "errors": 0, "blocked": 0, "empty": 0}
    assert fixed["errors"] == []
    assert asked_markers(server, t2) == [marker(7), marker(31)]
    t3 = time.time()
    cached = evaluate_flow(label="part", config=config, return_state=True)
    assert task_states(cached)["evaluate-model"] == ["Cached"]
    assert asked_markers(server, t3) == []

    # 3/50 = 0.06 > 0.05: the task and the flow fail, one line per error kind, nothing cached
    for i in (3, 4):
        server.add_prompt_fault(marker(i), 404)
    server.add_prompt_fault(marker(5), 403)
    t4 = time.time()
    bad = evaluate_flow(label="over", config=config, return_state=True)
    assert bad.is_failed()
    with pytest.raises(EvaluationFailed) as err:
        bad.result()
    lines = str(err.value).splitlines()
    assert lines[0].startswith("evaluation of gemini-2.5-flash failed: 3/50 examples ended in errors")
    assert lines[1:] == ["2/50 examples: 404 NOT_FOUND: Injected fault 404 for this prompt (test server)",
                         "1/50 examples: 403 PERMISSION_DENIED: Injected fault 403 for this prompt (test server)"]
    assert task_states(bad)["evaluate-model"] == ["Failed"]
    assert len(asked_markers(server, t4)) == 50
    # a failed evaluation writes no results that `compare` could pick up
    from sftflow.infra import storage

    assert not storage.exists(storage.join(layout.eval_dir(f"{gcs_bucket}/runs/default", "over"), "results.jsonl"))
    t5 = time.time()
    server.clear_prompt_faults()
    ok = evaluate_flow(label="over", config=config)
    assert ok["errors"] == [] and asked_markers(server, t5) == [marker(3), marker(4), marker(5)]

    # item 7: a label with '_' is allowed and its artifact keys are valid (underscore → dash)
    evaluate_flow(label="x_y", config={**config, "samples": 2})
    wanted = ["eval-x-y-metrics", "eval-x-y-report"]
    with get_client(sync_client=True) as client:  # filtered: the session's server holds more than one page
        keys = {a.key for a in client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=wanted)))}
    assert set(wanted) <= keys


@pytest.mark.slow
def test_pipeline_exits_1_when_an_evaluation_fails(make_vertex_server, gcs_bucket, tmp_path, prefect_api_env):
    from tests.smalldata import small_samples

    server = make_vertex_server(job_phases=(0.3, 0.6))
    server.add_prompt_fault("", 403)  # every generateContent: permission denied
    paths = small_samples(tmp_path)  # the full samples' token count before tuning alone took ~45 s
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = run_cli(["pipeline", "--train", paths["train"], "--val", paths["val"], "--test", paths["test"],
                    "--samples", "6", "--concurrency", "3", "--rpm", "60000", "--poll-interval", "1",
                    *vertex_flags(server, gcs_bucket, tmp_path / "root")], server, cwd, timeout=400,
                   api=prefect_api_env)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "failed: 6/6 examples ended in errors" in proc.stderr
    assert "6/6 examples: 403 PERMISSION_DENIED: Injected fault 403" in proc.stderr
    assert "report:" not in proc.stdout  # no report claims a result


def test_error_rate_threshold_is_a_share_of_examples():
    from sftflow.evaluation.results import ExampleResult

    def results(errors: int, total: int) -> list[ExampleResult]:
        return [ExampleResult(id=str(i), model="m", prompt_chars=1, reference="r",
                              error="BackendError: x: HTTP 401 UNAUTHENTICATED: no" if i < errors else None,
                              error_kind="401 UNAUTHENTICATED" if i < errors else None,
                              scores=None if i < errors else {"rouge1": 1.0})
                for i in range(total)]

    assert check_error_rate(results(0, 10), 0.05, "m") == []
    assert check_error_rate(results(1, 20), 0.05, "m") == ["1/20 examples: 401 UNAUTHENTICATED: no"]
    with pytest.raises(EvaluationFailed, match="2/20 examples ended in errors"):
        check_error_rate(results(2, 20), 0.05, "m")
    with pytest.raises(EvaluationFailed):
        check_error_rate(results(1, 10), 0.0, "m")  # max_error_rate=0: any error fails


# --------------------------------------------------------------------------- item 7: names checked first


BAD_LABELS = ["../../x", "a/b", "A.B", "", "x" * 64, "..", "-x"]


@pytest.mark.parametrize("label", BAD_LABELS)
def test_layout_refuses_bad_labels(tmp_path, label):
    with pytest.raises(layout.LayoutError, match="label: .* is not a valid name"):
        layout.eval_dir(str(tmp_path), label)


def test_layout_refuses_paths_that_climb_out(tmp_path):
    for part in ("..", ".", "a/b", "../x", "a\\b", ""):
        with pytest.raises(layout.LayoutError):
            layout.child(str(tmp_path), part)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "eval").symlink_to(tmp_path.parent)  # a symlink inside the run pointing out
    with pytest.raises(layout.LayoutError, match="resolves outside"):
        layout.eval_dir(str(tmp_path / "run"), "base")
    assert layout.eval_dir("gs://b/runs/r", "x_y") == "gs://b/runs/r/eval/x_y"


@pytest.mark.slow
def test_bad_labels_exit_1_before_any_request_and_nothing_is_written(make_vertex_server, tmp_path):
    server = make_vertex_server()
    csv_path = write_test_csv(tmp_path / "test.csv", 3)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    before = files_under(tmp_path)
    for label in BAD_LABELS:
        proc = run_cli(["evaluate", f"--output={label}", "--test", str(csv_path),
                        *vertex_flags(server, "gs://never-touched", tmp_path / "root")], server, cwd, timeout=120)
        assert proc.returncode == 1, (label, proc.stderr[-2000:])
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("sftflow: error: --output: "), (label, lines)
        assert lines[0].endswith(f"is not a valid name; use {layout.NAME_RULE}")
    assert server.requests == []
    assert files_under(tmp_path) == before  # nothing written anywhere, not even the local root


def test_flow_parameter_label_checked_before_any_work(make_vertex_server, tmp_path):
    from flows.evaluate import evaluate as evaluate_flow

    server = make_vertex_server()
    config = vertex_config(server, "gs://never-touched", tmp_path / "root",
                           test_uri=str(write_test_csv(tmp_path / "t.csv", 2)))
    for label in ("../../x", "A.B", ""):
        with pytest.raises(layout.LayoutError):
            evaluate_flow(label=label, config=config)
    assert server.requests == []
    assert not (tmp_path / "root").exists()


# --------------------------------------------------------------------------- item 10: cache keys


def _key(task, build_params: dict) -> str:
    ctx = types.SimpleNamespace(task=task)
    return task.cache_key_fn(ctx, build_params)


def _other_value(settings: Settings, name: str):
    value = getattr(settings, name)
    allowed = get_args(Settings.model_fields[name].annotation)
    if allowed and all(isinstance(a, str) for a in allowed):
        return next(a for a in allowed if a != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    return f"{value}-changed"


def test_evaluate_key_changes_with_every_generation_parameter_and_endpoint(tmp_path):
    from sftflow.evaluation.step import EvalSpec, generation_params
    from tasks.evaluation import evaluate_model

    csv_path = str(write_test_csv(tmp_path / "t.csv", 2))
    base = dict(_env_file=None, backend="vertex", project="p", region="us-central1", bucket="gs://b",
                vertex_base_url="http://127.0.0.1:1")
    s0 = Settings(**base)

    def key(s: Settings, model: str = "m") -> str:
        return _key(evaluate_model, {"spec": EvalSpec.from_settings(s), "model": model, "test_path": csv_path,
                                     "label": "base"})

    k0 = key(s0)
    assert key(Settings(**base)) == k0  # deterministic
    fields = dataclasses.fields(GenerationParams)
    assert len(fields) >= 4
    for f in fields:  # every field of the parameter model, found by walking it
        setting = f.metadata.get("setting", f.name)
        changed = Settings(**{**base, setting: _other_value(s0, setting)})
        assert getattr(generation_params(changed), f.name) != getattr(generation_params(s0), f.name)
        assert key(changed) != k0, f"changing {setting} (GenerationParams.{f.name}) did not change the key"
    for name, value in [("project", "q"), ("region", "europe-west4"), ("vertex_base_url", "http://127.0.0.1:2"),
                        ("samples", 7), ("seed", 5), ("run_name", "other")]:
        assert key(Settings(**{**base, name: value})) != k0, name
    assert key(s0, model="m2") != k0


def test_evaluate_key_covers_every_spec_field_not_declared_answer_neutral(tmp_path):
    """A field added to EvalSpec is in the key unless it is explicitly marked NOT_IN_KEY."""
    from sftflow.evaluation.step import EvalSpec
    from tasks.evaluation import evaluate_model

    csv_path = str(write_test_csv(tmp_path / "t.csv", 2))
    spec = EvalSpec.from_settings(Settings(_env_file=None, backend="vertex", project="p", bucket="gs://b"))

    def key(sp: EvalSpec) -> str:
        return _key(evaluate_model, {"spec": sp, "model": "m", "test_path": csv_path, "label": "base"})

    k0 = key(spec)
    neutral = {f.name for f in dataclasses.fields(EvalSpec) if f.metadata.get("in_key") is False}
    assert neutral == {"work_dir", "concurrency", "rpm", "max_attempts", "max_error_rate", "vertex_access_token",
                       "eval_mode", "batch_min_examples", "batch_pending_timeout", "batch_fallback_online",
                       "batch_online_below", "batch_poll_interval", "claim_stale_after", "cancel_job_on_interrupt",
                       "base_model", "generation_prices_usd", "lease_ttl_s"}
    for f in dataclasses.fields(EvalSpec):
        value = getattr(spec, f.name)
        if f.name == "generation":
            other = dataclasses.replace(value, temperature=value.temperature + 0.5)
        elif f.name == "vertex_access_token":
            other = SecretStr("a-token")
        elif isinstance(value, Path):
            other = value / "elsewhere"
        elif isinstance(value, (int, float)):
            other = value + 1
        else:
            other = f"{value}-changed"
        changed = key(dataclasses.replace(spec, **{f.name: other}))
        assert (changed == k0) == (f.name in neutral), f.name


def test_compare_key_includes_the_bootstrap_seed(tmp_path):
    from tasks.evaluation import compare_results

    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("{}\n")
    b.write_text("{}\n")
    params = {"baseline_uri": str(a), "tuned_uri": str(b), "out_dir": str(tmp_path / "c"), "seed": 0}
    k0 = _key(compare_results, params)
    assert _key(compare_results, {**params, "seed": 1}) != k0
    b.write_text("{} \n")
    assert _key(compare_results, params) != k0


# --------------------------------------------------------------------------- item 9: Retry-After


def test_parse_retry_after_seconds_and_http_date():
    assert parse_retry_after("1") == 1.0
    assert parse_retry_after(" 120 ") == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0  # in the past
    for bad in (None, "", "soon", "-1", "1.5e9x"):
        assert parse_retry_after(bad) is None


@pytest.mark.parametrize("code", [429, 503])
def test_retry_after_from_server_delays_the_next_attempt(make_vertex_server, vertex_settings_for, tmp_path, code):
    from sftflow.backends.vertex import VertexGenerator

    server = make_vertex_server()
    server.add_prompt_fault(marker(0), code, times=1, retry_after="1")
    examples = read_test_csv(str(write_test_csv(tmp_path / "t.csv", 1)))
    gen = VertexGenerator(vertex_settings_for(server), "gemini-2.5-flash")
    results = evaluate(gen, examples, params=GenerationParams(), checkpoint=tmp_path / "c.jsonl",
                       concurrency=1, rpm=60000, max_attempts=3, backoff_base=0.001, backoff_cap=0.01)
    assert results[0].error is None and results[0].attempts == 2
    reqs = generate_requests(server)
    assert [r["status"] for r in reqs] == [code, 200]
    # the server's own clock: the retry came at least the asked second later (own backoff: ≤ 10 ms)
    assert reqs[1]["time"] - reqs[0]["time"] >= 0.95


# --------------------------------------------------------------------------- item 11: JSON results, one process per checkpoint


def test_every_persisted_task_and_every_flow_uses_the_json_serializer():
    """A flow's failure (its exception) is persisted too, with pickle unless the flow says json."""
    import importlib
    import pkgutil

    from prefect import Flow, Task

    import flows
    import tasks

    persisted, flow_names = [], []
    for package in (tasks, flows):
        for mod in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{mod.name}")
            for obj in vars(module).values():
                if isinstance(obj, Task) and obj.persist_result:
                    persisted.append(obj.name)
                    assert obj.result_serializer == "json", f"task {obj.name}: {obj.result_serializer!r}"
                if isinstance(obj, Flow):
                    flow_names.append(obj.name)
                    assert obj.result_serializer == "json", f"flow {obj.name}: {obj.result_serializer!r}"
    assert {"evaluate-model", "compare-results", "download", "convert", "validate"} <= set(persisted)
    assert {"evaluate", "compare", "sft_pipeline", "prepare_data", "tune", "cleanup"} <= set(flow_names)


_LOCK_CHILD = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, {root!r})
    from sftflow.backends.base import GenerationParams
    from sftflow.backends.vertex import VertexGenerator
    from sftflow.config import Settings
    from sftflow.data.testset import read_test_csv
    from sftflow.errors import CheckpointBusy
    from sftflow.evaluation.engine import evaluate
    from tests.servers.vertex_server import TEST_TOKEN
    s = Settings(_env_file=None, backend="vertex", project="test-project", bucket="gs://b",
                 vertex_base_url={url!r}, vertex_access_token=TEST_TOKEN)
    open({ready!r} + str(__import__("os").getpid()), "w").close()
    while not __import__("os").path.exists({go!r}):
        time.sleep(0.005)
    try:
        res = evaluate(VertexGenerator(s, "gemini-2.5-flash"), read_test_csv({csv!r}), params=GenerationParams(),
                       checkpoint={ckpt!r}, concurrency=2, rpm=1e6, max_attempts=3)
    except CheckpointBusy as exc:
        print(f"busy: {{exc}}", file=sys.stderr)
        sys.exit(3)
    print(len(res))
""")


@pytest.mark.slow
def test_two_processes_on_one_checkpoint_one_runs_one_fails_fast(make_vertex_server, tmp_path):
    n = 20
    server = make_vertex_server(latency_s=0.2)  # ~2 s of work: both processes overlap
    csv_path = write_test_csv(tmp_path / "t.csv", n)
    ckpt = tmp_path / "work" / "checkpoints" / "base-0123456789abcdef.jsonl"
    ready, go = str(tmp_path / "ready-"), str(tmp_path / "go")
    code = _LOCK_CHILD.format(root=str(ROOT), url=server.base_url, csv=str(csv_path), ckpt=str(ckpt),
                              ready=ready, go=go)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < 2:  # both imported everything: start them together
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.02)
    Path(go).touch()
    outs = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 3], outs
    loser = next(i for i, p in enumerate(procs) if p.returncode == 3)
    winner = procs[1 - loser]
    message = outs[loser][1].strip()
    assert message.startswith(f"busy: {ckpt}: another evaluation is writing this checkpoint (pid {winner.pid} on ")
    assert outs[1 - loser][0].strip() == str(n)
    # paid once: every prompt asked exactly once; the checkpoint holds n intact lines
    assert asked_markers(server) == sorted(marker(i) for i in range(n))
    lines = ckpt.read_text().splitlines()
    assert len(lines) == n and len({json.loads(x)["id"] for x in lines}) == n

    # the loser's rerun, once the winner is done, asks nothing
    before = len(server.requests)
    rerun = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120)
    assert rerun.returncode == 0 and rerun.stdout.strip() == str(n), rerun.stderr[-2000:]
    assert len(server.requests) == before


def test_lock_of_a_sigkilled_holder_does_not_block(tmp_path):
    ckpt = tmp_path / "c.jsonl"
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from sftflow.evaluation.checkpoint import CheckpointLock
        CheckpointLock({str(ckpt)!r}).acquire()
        print("locked", flush=True)
        time.sleep(600)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(CheckpointBusy, match=f"pid {child.pid} on "):
            CheckpointLock(ckpt).acquire()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    lock = CheckpointLock(ckpt)
    lock.acquire()  # the kernel dropped the dead holder's lock: no stale lock, no waiting
    try:
        assert f"pid {os.getpid()} on " in (tmp_path / "c.jsonl.lock").read_text()
    finally:
        lock.release()
    assert Checkpoint(ckpt).load() == {}


class _TouchOnUnpickle:
    """Unpickling this creates a file: a stand-in for code a planted pickle would run."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_planted_pickle_cache_record_is_never_unpickled(tmp_path):
    from prefect import flow
    from prefect._internal.result_records import ResultRecord, ResultRecordMetadata
    from prefect.serializers import PickleSerializer
    from prefect.settings import get_current_settings

    from tasks.data import validate
    from tests.flowutil import task_states

    csv_path = str(write_test_csv(tmp_path / "t.csv", 3))
    key = _key(validate, {"path": csv_path, "kind": "test", "source": "t.csv"})
    record_path = Path(get_current_settings().results.local_storage_path).expanduser() / key
    record_path.parent.mkdir(parents=True, exist_ok=True)
    ran = tmp_path / "code-ran"
    planted = ResultRecord(result=_TouchOnUnpickle(ran),
                           metadata=ResultRecordMetadata(serializer=PickleSerializer(), storage_key=str(record_path)))
    record_path.write_bytes(planted.serialize())  # in the session's result folder: removed at the end

    @flow(persist_result=False, result_serializer="json")
    def validate_once(path: str):
        return validate(path, "test", "t.csv")

    try:
        state = validate_once(csv_path, return_state=True)
        assert state.result().examples == 3
        assert task_states(state)["validate"] == ["Completed"]  # recomputed, not served from the planted record
        assert not ran.exists()
        ResultRecord.deserialize(record_path.read_bytes())  # what Prefect would have done with it
        assert ran.exists()  # ...which runs the planted code: the guard above is what kept it from running
    finally:  # later tests of this session (worker) validate the same content under the same key
        record_path.unlink(missing_ok=True)
