"""Unhappy paths of credentials and cleanup (issue 9, items 1 and 2).

Credentials: no application-default credentials and a metadata address that never answers must not
hang anything; a static token reaches Cloud Storage too; many threads resolve at once without a
deadlock. Cleanup: only what sftflow made is deleted (sibling runs, user files and corrupt records
survive), a cleaned result is never served from Prefect's cache, and a SUCCEEDED job whose model
was deleted is not re-attached.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from sftflow.infra import credentials, gcs, storage
from tests.unhappy.helpers_http import RecordingProxy, SilentServer

TOKEN = "tok-for-storage-test-only"


@pytest.fixture
def fresh_credentials():
    """Each test decides credentials from scratch, and leaves no process token behind."""
    credentials.reset()
    gcs.reset_clients()
    yield
    credentials.reset()
    gcs.reset_clients()


@pytest.fixture
def no_adc(tmp_path, monkeypatch):
    """An environment with no Google credentials at all, and a metadata address that black-holes."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG", "NO_GCE_CHECK", "GCE_METADATA_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    with SilentServer() as silent:
        monkeypatch.setenv("GCE_METADATA_IP", silent.address)
        yield silent


# --------------------------------------------------------------------------- item 1: credentials


def test_no_credentials_reads_a_public_object_without_hanging(gcs_emulator, no_adc, tmp_path):
    """A fresh machine (empty HOME, no key file, no gcloud, a metadata address that never answers)
    reads a public object within seconds. The child reaches the emulator through the SDK's
    API_ENDPOINT_OVERRIDE, not STORAGE_EMULATOR_HOST, so it takes the production credentials path."""
    bucket = "public-" + os.urandom(4).hex()
    gcs.client().create_bucket(bucket)
    storage.write_text(f"gs://{bucket}/samples/test.csv", "input_text,output_text\na,b\n")
    env = {k: v for k, v in os.environ.items() if k not in ("STORAGE_EMULATOR_HOST", "SFTFLOW_VERTEX_ACCESS_TOKEN")}
    env["API_ENDPOINT_OVERRIDE"] = gcs_emulator
    code = textwrap.dedent(f"""
        import time
        t = time.monotonic()
        from sftflow.infra import credentials, storage
        text = storage.read_text("gs://{bucket}/samples/test.csv")
        print(credentials.resolve().source, round(time.monotonic() - t, 2), repr(text))
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    source, elapsed, text = proc.stdout.split(" ", 2)
    assert source == "anonymous"
    assert text.strip() == repr("input_text,output_text\na,b\n")
    assert float(elapsed) < 8.0, proc.stdout  # one 1 s probe, not google-auth's 3 x 3 s plus backoff
    assert no_adc.connections == 1  # the metadata address was probed once, by us only


def test_static_token_reaches_cloud_storage(gcs_emulator, fresh_credentials, monkeypatch):
    """With a token, every storage request carries `Authorization: Bearer <token>`; without, none does."""
    bucket = "tok-" + os.urandom(4).hex()
    gcs.client().create_bucket(bucket)
    with RecordingProxy(gcs_emulator) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        uri = f"gs://{bucket}/runs/exp/a.txt"
        credentials.use_token(TOKEN)
        storage.write_text(uri, "hello")
        assert storage.read_text(uri) == "hello"
        assert storage.list_uris(f"gs://{bucket}/runs/exp") == [uri]
        assert storage.exists(uri)
        with_token = list(proxy.requests)
        credentials.use_token(None)
        assert storage.read_text(uri) == "hello"  # the emulator serves anonymous reads
        anonymous = proxy.requests[len(with_token):]
    assert len(with_token) >= 4
    assert {r["authorization"] for r in with_token} == {f"Bearer {TOKEN}"}
    assert anonymous and all(r["authorization"] is None for r in anonymous)


def test_many_threads_resolve_at_once_without_deadlock(no_adc, fresh_credentials, monkeypatch):
    """32 threads ask for credentials and a storage client at the same moment: all return, with one
    decision (one probe of the metadata address), and one token resolves to one credential."""
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    barrier = threading.Barrier(32)
    results: list[tuple] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait(10)
            token = TOKEN if i % 2 else None
            results.append((token, credentials.resolve(token), gcs.client() if not token else None))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(32)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a thread is stuck: deadlock"
    assert not errors, errors
    assert time.monotonic() - start < 15
    anon = {id(r) for tok, r, _ in results if tok is None}
    tok = {id(r) for t, r, _ in results if t is not None}
    clients = {id(c) for _, _, c in results if c is not None}
    assert len(anon) == 1 and len(tok) == 1 and len(clients) == 1
    assert credentials.resolve().source == "anonymous" and credentials.resolve(TOKEN).source == "token"
    assert no_adc.connections == 1


def test_adc_key_file_is_used_without_any_network(no_adc, fresh_credentials, tmp_path, monkeypatch):
    """A key file (here gcloud-style user credentials) wins over the metadata server: no probe at all."""
    key = tmp_path / "adc.json"
    key.write_text(json.dumps({"type": "authorized_user", "client_id": "c", "client_secret": "s",
                               "refresh_token": "r"}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    assert credentials.resolve().source == "adc"
    assert no_adc.connections == 0


def test_unusable_key_file_is_one_line_naming_it(no_adc, fresh_credentials, tmp_path, monkeypatch):
    key = tmp_path / "broken.json"
    key.write_text("{not json")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    with pytest.raises(credentials.CredentialsError) as info:
        credentials.resolve()
    message = str(info.value)
    assert "\n" not in message and "GOOGLE_APPLICATION_CREDENTIALS" in message and str(key) in message


def test_vertex_without_any_credentials_is_a_one_line_error(no_adc, fresh_credentials, monkeypatch):
    """The genai client is refused at once with what to do, instead of hanging in google-auth."""
    from sftflow.backends.vertex_client import make_genai_client
    from sftflow.config import Settings
    from sftflow.errors import BackendError

    monkeypatch.delenv("SFTFLOW_VERTEX_ACCESS_TOKEN", raising=False)
    s = Settings(_env_file=None, backend="vertex", project="p", vertex_base_url="http://127.0.0.1:9")
    start = time.monotonic()
    with pytest.raises(BackendError, match="SFTFLOW_VERTEX_ACCESS_TOKEN"):
        make_genai_client(s)
    assert time.monotonic() - start < 5


# --------------------------------------------------------------------------- item 2: cleanup scope

SHA = "0123456789abcdef" * 4


def _record(run: str, job: str, root: str) -> str:
    return json.dumps({"name": job, "state": "SUCCEEDED", "tuned_model": f"local:{job}",
                       "endpoint": storage.join(root, "models", job), "run_name": run, "spec": {}})


@pytest.fixture(params=["gcs", "local"])
def storage_root(request, tmp_path):
    """A storage root in the GCS emulator (a fresh bucket) or on the local disk."""
    if request.param == "gcs":
        return request.getfixturevalue("gcs_bucket")
    return str((tmp_path / "root").resolve())


def test_cleanup_deletes_only_what_sftflow_made(storage_root, tmp_path):
    """Runs exp, exp2 and exp-old side by side; user files under datasets/ and datasets-archive/;
    a corrupt record, a stray file under tuning/, and a record whose job name walks out of the root:
    cleaning exp (with --include-datasets) deletes exactly exp's objects, records, model files and
    sftflow's content-addressed datasets; a second cleanup deletes nothing."""
    from sftflow.backends.local import LocalTuner
    from sftflow.cleanup.plan import execute, plan_cleanup
    from sftflow.config import Settings

    root = storage_root
    j = lambda *p: storage.join(root, *p)  # noqa: E731
    ours = [j("runs", "exp", "eval", "base", "results.jsonl"), j("runs", "exp", "report.md"),
            j("datasets", "train", f"train-{SHA[:12]}.jsonl"), j("datasets", "test", f"test-{SHA[:12]}.csv"),
            j("models", "job-20260101-000000-abcdef", "config.json"),
            j("models", "job-20260101-000000-abcdef", "adapter.safetensors")]
    theirs = [j("runs", "exp2", "report.md"), j("runs", "exp-old", "eval", "base", "results.jsonl"),
              j("runs", "exp2", "tuning", "loss.png"), j("datasets", "train", "my-notes.txt"), j("datasets", "mine.csv"),
              j("datasets", "train", f"val-{SHA[:12]}.jsonl"),
              j("datasets-archive", "train", f"train-{SHA[:12]}.jsonl"), j("models", "job-other", "config.json"),
              j("tuning", "README.txt")]
    for uri in ours + theirs:
        storage.write_text(uri, "x")
    good, other, corrupt, evil = (j("tuning", f"k{c * 20}.json") for c in "abcd")
    storage.write_text(good, _record("exp", "job-20260101-000000-abcdef", root))
    storage.write_text(other, _record("exp2", "job-other", root))
    storage.write_text(corrupt, "{not json")
    storage.write_text(evil, _record("exp", "../../outside", root))
    outside = tmp_path / "outside" / "secret.txt"  # where root/models/../../outside points locally
    outside.parent.mkdir()
    outside.write_text("keep me")
    theirs += [other, corrupt, evil]

    s = Settings(_env_file=None, bucket=root if root.startswith("gs://") else None, local_root=tmp_path / "root",
                 run_name="exp")
    plan = plan_cleanup(s, lambda: LocalTuner(s), include_datasets=True)
    assert sorted(i.uri for i in plan.delete) == sorted(ours + [good])
    skipped = {i.uri: i.reason for i in plan.skipped}
    assert "unreadable tuning record" in skipped[corrupt]
    assert "unexpected job name" in skipped[evil]
    assert "not sftflow's" in skipped[j("datasets", "train", "my-notes.txt")]
    assert "not sftflow's" in skipped[j("tuning", "README.txt")]
    assert not any("datasets-archive" in u for u in skipped)  # outside the folder: never even listed

    execute(plan, lambda: LocalTuner(s), run_root=s.run_root)
    left = storage.list_uris(root + "/") if root.startswith("gs://") else storage.list_uris(root)
    assert sorted(left) == sorted(theirs)
    assert outside.read_text() == "keep me"

    again = plan_cleanup(s, lambda: LocalTuner(s), include_datasets=True)
    assert again.delete == [] and {i.uri for i in again.skipped} == set(skipped)
    execute(again, lambda: LocalTuner(s), run_root=s.run_root)
    assert sorted(storage.list_uris(root + "/") if root.startswith("gs://") else storage.list_uris(root)) == sorted(theirs)


def test_succeeded_job_whose_outputs_were_deleted_is_not_reattached(make_vertex_server, vertex_settings_for,
                                                                    tuning_datasets):
    """ensure_job attaches to a live SUCCEEDED job, but once cleanup deleted its endpoint and model
    (the job still lists as SUCCEEDED) it submits a new job instead of handing back a dead endpoint."""
    from sftflow.backends.base import TuningSpec
    from sftflow.tuning.hyperparameters import Hyperparameters
    from sftflow.backends.vertex import VertexTuner
    from sftflow.tuning.polling import await_job
    from sftflow.tuning.intent import ensure_job

    server = make_vertex_server(job_phases=(0.0, 0.1))
    tuner = VertexTuner(vertex_settings_for(server))
    spec = TuningSpec(base_model="gemini-2.5-flash", train_uri=tuning_datasets["train"],
                      val_uri=None, hyperparameters=Hyperparameters(1, 4, 1.0), display_name="t",
                      key="k" + "e" * 20)
    first, attached = ensure_job(tuner, spec)
    done = await_job(tuner, first, poll_interval=0.05, timeout=30)
    assert not attached and tuner.outputs_exist(done)
    assert ensure_job(tuner, spec) == (first, True)  # usable: attach, no second job

    tuner.delete_outputs(done, dry_run=False)
    assert tuner.get(first).state.value == "SUCCEEDED" and not tuner.outputs_exist(done)
    second, attached = ensure_job(tuner, spec)
    assert not attached and second != first
    assert server.count("POST", "/tuningJobs") == 2
    assert ensure_job(tuner, spec) == (second, True)  # the new job is the one reused from now on


def test_local_tuner_sees_its_deleted_model(tmp_path):
    from sftflow.backends.base import JobState, JobStatus
    from sftflow.backends.local import LocalTuner
    from sftflow.config import Settings

    s = Settings(_env_file=None, local_root=tmp_path / "root")
    tuner = LocalTuner(s)
    status = JobStatus(name="job-20260101-000000-abcdef", state=JobState.SUCCEEDED)
    model = storage.join(s.storage_root, "models", status.name, "config.json")
    storage.write_text(model, "{}")
    assert tuner.outputs_exist(status)
    tuner.delete_outputs(status, dry_run=False)
    assert not tuner.outputs_exist(status)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["gcs", "local"])
def test_after_cleanup_evaluate_and_compare_recompute_instead_of_serving_the_cache(where, vertex_server, tmp_path,
                                                                                    request, monkeypatch):
    """evaluate/compare, cleanup --yes, evaluate/compare again: recomputed (not Cached), the files
    exist again at the paths returned (what the CLI prints); the checkpoint spares the model calls."""
    from flows.cleanup import cleanup
    from flows.compare import compare
    from flows.evaluate import evaluate
    from sftflow.data.samples import sample_paths
    from tests.flowutil import task_states
    from tests.servers.vertex_fixtures import TEST_TOKEN

    monkeypatch.setenv("SFTFLOW_VERTEX_ACCESS_TOKEN", TEST_TOKEN)  # never a flow parameter
    config = {"backend": "vertex", "project": vertex_server.project, "region": vertex_server.location,
              "vertex_base_url": vertex_server.base_url, "run_name": "exp",
              "local_root": str(tmp_path / "root"), "samples": 4, "rpm": 6000}
    if where == "gcs":
        config["bucket"] = request.getfixturevalue("gcs_bucket")
    csv = sample_paths()["test"]
    endpoint = vertex_server.deploy_tuned_model()["endpoint"]  # a real tuned endpoint: the server 404s others
    runs = {"base": dict(model="base"), "tuned": dict(model=endpoint, label="tuned")}

    first = {label: evaluate(config={**config, "test_uri": csv}, **kw) for label, kw in runs.items()}
    first_comp = compare(config=config)
    again = evaluate(config={**config, "test_uri": csv}, return_state=True, **runs["base"])
    assert task_states(again)["evaluate-model"] == ["Cached"]  # unchanged rerun: still cached

    cleanup(yes=True, config=config)
    assert not storage.exists(first["base"]["results_uri"]) and not storage.exists(first_comp["comparison_uri"])
    calls = vertex_server.count("POST", ":generateContent")

    for label, kw in runs.items():
        state = evaluate(config={**config, "test_uri": csv}, return_state=True, **kw)
        assert task_states(state)["evaluate-model"] == ["Completed"]
        out = state.result()
        assert out["results_uri"] == first[label]["results_uri"]
        for key in ("results_uri", "report_uri", "plot_uri"):
            assert storage.exists(out[key]), out[key]
    state = compare(config=config, return_state=True)
    assert task_states(state)["compare-results"] == ["Completed"]
    comp = state.result()
    assert all(storage.exists(u) for u in [comp["comparison_uri"], comp["report_uri"], *comp["plots"].values()])
    # locally the checkpoint is in the work area and spares the model calls; in a bucket it lives in the run's folder
    # (shared by machines, under a lease) and cleanup deleted it with the run: each example is asked exactly once more
    asked_again = 0 if where == "local" else 2 * config["samples"]
    assert vertex_server.count("POST", ":generateContent") == calls + asked_again
