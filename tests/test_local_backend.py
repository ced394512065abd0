"""The offline `local` backend: text helpers, sample data, the extractive model, and the job
lifecycle (progress, success, cancel, kill → resume, find, determinism) through LocalTuner."""

from __future__ import annotations

import csv
import json
import os
import signal
import time
from pathlib import Path

import pytest

from sftflow.backends.base import Generation, GenerationParams, JobState, TuningSpec
from sftflow.tuning.hyperparameters import Hyperparameters
from sftflow.backends.local import LocalTuner, jobs, make_local_generator, resume
from sftflow.backends.local.text import (
    parse_line,
    read_examples,
    requested_sentences,
    split_prompt,
    split_sentences,
)
from sftflow.config import Settings
from sftflow.data.samples import generate, sample_paths

SAMPLES = sample_paths()


def to_contents(src: str, dest: Path, n: int) -> str:
    """The first n chat lines of `src` as Gemini `contents` JSONL (what prepare uploads)."""
    out = []
    for line in Path(src).read_text().splitlines()[:n]:
        msgs = json.loads(line)["messages"]
        obj = {"contents": [{"role": "model" if m["role"] == "assistant" else "user", "parts": [{"text": m["content"]}]}
                            for m in msgs if m["role"] != "system"]}
        sys_msg = [m for m in msgs if m["role"] == "system"]
        if sys_msg:
            obj["systemInstruction"] = {"parts": [{"text": sys_msg[0]["content"]}]}
        out.append(json.dumps(obj))
    dest.write_text("\n".join(out) + "\n")
    return str(dest)


@pytest.fixture
def small_data(tmp_path):
    return (to_contents(SAMPLES["train"], tmp_path / "train.jsonl", 40),
            to_contents(SAMPLES["val"], tmp_path / "val.jsonl", 8))


def spec(data, key="key-1", **kw) -> TuningSpec:
    hyper = dict(epochs=1, adapter_size=4, learning_rate_multiplier=1.0)
    base = dict(base_model="minilm-extractive", train_uri=data[0], val_uri=data[1], display_name="t", key=key, seed=0,
                budget_s=60.0)
    for k, v in kw.items():
        (hyper if k in hyper else base)[k] = v
    return TuningSpec(hyperparameters=Hyperparameters(**hyper), **base)


def wait_for(pred, timeout=300.0, poll=0.2):  # generous: encoding on a busy 2-core machine
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(poll)
    raise AssertionError("condition not reached in time")


# --------------------------------------------------------------------------- fast


def test_prompt_and_sentences():
    instr, art = split_prompt("Provide a summary with about two sentences for the following article:\n\nHow to X\n\nA b. C d!")
    assert instr.endswith("article:") and art.startswith("How to X")
    assert requested_sentences(instr) == 2
    assert requested_sentences("Summarize in 3 sentences") == 3
    assert requested_sentences("Summarize this") is None
    assert split_prompt("Summarize the following article: Hello there. Bye.")[1] == "Hello there. Bye."
    assert split_sentences("How to X\nFirst, do it. Then rest! Is it done? \"Yes.\" e.g. ok") == [
        "How to X", "First, do it.", "Then rest!", "Is it done?", "\"Yes.\" e.g. ok"]


def test_parse_line_both_formats_and_errors():
    c = {"systemInstruction": {"parts": [{"text": "S"}]},
         "contents": [{"role": "user", "parts": [{"text": "Q"}]}, {"role": "model", "parts": [{"text": "A"}]}]}
    assert parse_line(c, "f:1") == parse_line(
        {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
                      {"role": "assistant", "content": "A"}]}, "f:1")
    with pytest.raises(ValueError, match="f:7: field 'contents'"):
        parse_line({"contents": [{"role": "user", "parts": [{"text": "Q"}]}]}, "f:7")


def test_read_examples_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"messages": []}\n{not json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: field 'contents'"):
        read_examples(p)
    p.write_text(json.dumps({"contents": [{"role": "user", "parts": [{"text": "Q"}]},
                                          {"role": "model", "parts": [{"text": "A"}]}]}) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: invalid JSON"):
        read_examples(p)


def test_sample_files_are_what_the_generator_makes():
    built = generate.build()
    assert built == generate.build()  # deterministic
    here = Path(SAMPLES["train"]).parent
    for name, data in built.items():
        assert (here / name).read_bytes() == data, f"{name} is stale: run python -m sftflow.data.samples.generate"
    assert sum(len(d) for d in built.values()) < 2_000_000
    train = read_examples(SAMPLES["train"])
    rows = list(csv.DictReader(open(SAMPLES["test"], encoding="utf-8")))
    assert len(train) == 400 and len(rows) >= 50
    assert set(rows[0]) == {"input_text", "output_text"}
    assert 8 <= len(split_sentences(split_prompt(train[0].prompt)[1])) <= 20


@pytest.mark.slow  # loads MiniLM (~5 s quiet, ~20 s on 2 busy cores)
def test_base_model_extracts_requested_sentences():
    g = make_local_generator(Settings(), "minilm-extractive")
    assert g is not None and g.model == "minilm-extractive"
    row = next(csv.DictReader(open(SAMPLES["test"], encoding="utf-8")))
    out = g.generate(row["input_text"], GenerationParams())
    assert isinstance(out, Generation) and out.finish_reason == "STOP"
    sents = split_sentences(split_prompt(row["input_text"])[1])
    picked = split_sentences(out.text)
    assert len(picked) == 2 and all(s in sents for s in picked)
    assert sents.index(picked[0]) < sents.index(picked[1])  # article order
    assert out.prompt_tokens > out.output_tokens > 0


def test_unknown_job_and_missing_model(tmp_path):
    from sftflow.errors import BackendError

    s = Settings(local_root=tmp_path / "root")
    with pytest.raises(BackendError, match="no such local tuning job"):
        LocalTuner(s).get("job-nope")
    assert LocalTuner(s).find("k") == []
    with pytest.raises(BackendError):
        make_local_generator(s, str(tmp_path / "no-such-model"))


# --------------------------------------------------------------------------- jobs


def test_request_is_the_runners_parameters(tmp_path):
    """LocalTuner.request (what a dry run prints, what submit writes to spec.json) is what the runner trains with:
    each hyperparameter under its TrainParams name, the seed and the budget (the spec's, else the setting)."""
    from sftflow.backends.local.runner import train_params
    from sftflow.backends.local.training import TrainParams

    tuner = LocalTuner(Settings(local_root=tmp_path / "root", local_train_budget_s=33))
    data = ("gs://b/train.jsonl", None)  # read by the runner only
    request = tuner.request(spec(data, epochs=3, adapter_size=8, learning_rate_multiplier=0.5, budget_s=None))
    assert request["train"] == {"epochs": 3, "lora_rank": 8, "lr_multiplier": 0.5, "seed": 0, "budget_s": 33}
    job_dir = jobs.create(tuner.root, request, {"storage_root": str(tmp_path / "root")})
    params = TrainParams(**train_params(jobs.read_json(job_dir / "spec.json")))
    assert (params.epochs, params.lora_rank, params.lr_multiplier, params.budget_s) == (3, 8, 0.5, 33)
    legacy = {"spec": {"epochs": 2, "adapter_size": 4, "learning_rate_multiplier": 1.0, "seed": 1},
              "default_budget_s": 60}  # a job folder an earlier version wrote, resumed after an upgrade
    assert train_params(legacy) == {"epochs": 2, "lora_rank": 4, "lr_multiplier": 1.0, "seed": 1, "budget_s": 60}


@pytest.mark.slow
def test_lifecycle_success_find_and_delete(tmp_path, small_data):
    s = Settings(local_root=tmp_path / "root")
    tuner = LocalTuner(s)
    name = tuner.submit(spec(small_data, epochs=3, budget_s=900))  # all 15 steps even on 2 busy cores
    assert jobs.read_json(tuner.root / name / "spec.json")["spec"] == tuner.request(spec(small_data, epochs=3,
                                                                                           budget_s=900))
    first = tuner.get(name)
    assert first.state in (JobState.PENDING, JobState.RUNNING) and first.key == "key-1"
    running = wait_for(lambda: (st := tuner.get(name)).step and st.state == JobState.RUNNING and st)
    assert running.total_steps == 15 and 0 < running.progress <= 1
    done = jobs.wait(tuner.root / name, 900)  # a generous deadline: 15 CPU steps crawl on 2 busy cores
    assert done.state == JobState.SUCCEEDED, done.error
    assert done.step == 15 and done.metrics["train_loss"] and done.metrics["val_loss"]
    (first_step, first_val), (last_step, last_val) = done.metrics["val_loss"][0], done.metrics["val_loss"][-1]
    assert (first_step, last_step) == (0, 15) and last_val < first_val  # training lowered the held-out loss
    assert done.stats["example_count"] == 40 and done.stats["peak_rss_mb"] > 0
    assert done.tuned_model == f"local:{name}"
    assert [j.name for j in tuner.find("key-1")] == [name] and tuner.find("other") == []
    out = make_local_generator(s, done.endpoint).generate(
        next(csv.DictReader(open(SAMPLES["test"], encoding="utf-8")))["input_text"], GenerationParams())
    assert out.finish_reason == "STOP" and out.text
    # One checkpoint per epoch, in Vertex's shape; the last is the job's own endpoint; each one answers.
    assert [(c["epoch"], c["step"]) for c in done.checkpoints] == [(1, 5), (2, 10), (3, 15)]
    assert done.checkpoints[-1]["endpoint"] == done.endpoint
    assert make_local_generator(s, done.checkpoints[0]["endpoint"]).generate("A. B. C.", GenerationParams()).text
    listed = tuner.delete_outputs(done, dry_run=True)
    files = ["adapter.safetensors", "config.json", "head.safetensors"]
    assert sorted(str(Path(u).relative_to(done.endpoint)) for u in listed) == sorted(
        files + [f"checkpoints/epoch-{e}/{f}" for e in (1, 2) for f in files])
    assert all(Path(u).exists() for u in listed)
    assert tuner.delete_outputs(done, dry_run=False) == listed
    assert not any(Path(u).exists() for u in listed)


@pytest.mark.slow
def test_cancel(tmp_path, small_data):
    tuner = LocalTuner(Settings(local_root=tmp_path / "root"))
    name = tuner.submit(spec(small_data, epochs=100, budget_s=300))
    wait_for(lambda: tuner.get(name).step)
    tuner.cancel(name)
    st = jobs.wait(tuner.root / name, 300)
    assert st.state == JobState.CANCELLED
    assert st.step < st.total_steps


@pytest.mark.slow
def test_killed_runner_resumes_from_checkpoint(tmp_path, small_data, monkeypatch):
    monkeypatch.setenv("SFTFLOW_LOCAL_CHECKPOINT_S", "1")
    tuner = LocalTuner(Settings(local_root=tmp_path / "root"))
    name = tuner.submit(spec(small_data, epochs=100, budget_s=8))
    job_dir = tuner.root / name
    import torch

    def checkpoint_with_curve():
        if not (job_dir / "checkpoint.pt").exists():
            return None
        ckpt = torch.load(job_dir / "checkpoint.pt", weights_only=True)
        return ckpt if ckpt["metrics"]["train_loss"] else None

    ckpt = wait_for(checkpoint_with_curve)
    ckpt_step = ckpt["step"]
    ckpt_curve = [tuple(x) for x in ckpt["metrics"]["train_loss"]]
    assert ckpt_step > 0
    pid = jobs.read_json(job_dir / "status.json")["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not jobs.is_alive(pid, None))
    st = tuner.get(name)  # notices the dead runner and starts another
    assert st.stats["restarts"] == 1 and st.state == JobState.RUNNING
    resumed = wait_for(lambda: (x := tuner.get(name)).stats["phase"] == "training" and x)
    assert resumed.step >= ckpt_step  # continued, not restarted at 0
    st = jobs.wait(job_dir, 600)
    assert st.state == JobState.SUCCEEDED, st.error
    assert st.stats["restarts"] == 1
    steps = [s for s, _ in st.metrics["train_loss"]]
    # The curve is kept across the restart: it extends what the checkpoint held.
    assert steps == sorted(steps) and [tuple(x) for x in st.metrics["train_loss"][: len(ckpt_curve)]] == ckpt_curve


def ended_job(root: Path, data, state="CANCELLED", checkpoint_step=7, created="2026-01-01T00:00:00+00:00",
              **kw) -> Path:
    """A job folder as a runner leaves it when it ends (no process), with a checkpoint at `checkpoint_step`."""
    tuner = LocalTuner(Settings(local_root=root))
    request = tuner.request(spec(data, **kw))
    job_dir = jobs.create(tuner.root, request, {"storage_root": str(root), "fingerprint": resume.fingerprint(request)})
    jobs.update_status(job_dir, state=state, step=checkpoint_step, checkpoint_step=checkpoint_step, create_time=created)
    (job_dir / "checkpoint.pt").write_bytes(b"not read: checkpoint_step says which step it holds")
    return job_dir


def test_resume_decision_says_why_a_new_job_starts_from_step_0(tmp_path, small_data):
    root = tmp_path / "root"
    jobs_root = root / "work" / "jobs"
    new = resume.fingerprint(LocalTuner(Settings(local_root=root)).request(spec(small_data)))
    assert resume.decide(jobs_root, "key-1", new) is None  # the intent's first job: nothing to say

    old = ended_job(root, small_data)
    d = resume.decide(jobs_root, "key-1", new)
    assert (d.source, d.step, d.note) == (old, 7, f"resuming from job {old.name}'s checkpoint at step 7")
    assert resume.decide(jobs_root, "key-2", new) is None  # another intent's job is never resumed
    # The budget is wall-clock time summed over restarts (carried in the checkpoint): a new one still resumes.
    assert resume.decide(jobs_root, "key-1", resume.fingerprint(
        LocalTuner(Settings(local_root=root)).request(spec(small_data, budget_s=999)))).source == old

    changed = dict(new, train=dict(new["train"], lora_rank=8), data=dict(new["data"], train="other"))
    assert resume.decide(jobs_root, "key-1", changed).note == (
        f"starting from step 0: job {old.name}'s inputs differ (lora_rank 4 → 8, train data changed)")

    meta = jobs.read_json(old / "spec.json")
    jobs.write_json(old / "spec.json", {k: v for k, v in meta.items() if k != "fingerprint"})
    assert "made by an earlier sftflow that did not record what it trained on" in resume.decide(
        jobs_root, "key-1", new).note
    jobs.write_json(old / "spec.json", meta)

    (old / "checkpoint.pt").unlink()
    assert resume.decide(jobs_root, "key-1", new).note == (
        f"starting from step 0: job {old.name} was cancelled before it saved a checkpoint")

    failed = ended_job(root, small_data, state="FAILED", created="2026-01-02T00:00:00+00:00")  # the newest counts
    d = resume.decide(jobs_root, "key-1", new)
    assert d.source is None and d.note == (
        f"starting from step 0: the last job for this intent, {failed.name}, ended FAILED, not cancelled "
        "(only a cancelled job's checkpoint is resumed)")


@pytest.mark.slow
def test_a_new_job_for_a_cancelled_intent_resumes_from_its_checkpoint(tmp_path, small_data, caplog):
    """Ctrl-C cancels the job (its runner saves the step it stopped at); --resubmit-failed submits a new job for
    the same intent, which starts at that step, with the cancelled job's curve, and says so."""
    tuner = LocalTuner(Settings(local_root=tmp_path / "root"))
    old = tuner.submit(spec(small_data, epochs=100, budget_s=8))
    wait_for(lambda: (tuner.get(old).step or 0) >= 2)
    tuner.cancel(old)
    cancelled = jobs.wait(tuner.root / old, 300)
    assert cancelled.state == JobState.CANCELLED
    step = jobs.read_json(tuner.root / old / "status.json")["checkpoint_step"]
    assert step >= 2

    with caplog.at_level("INFO", logger="sftflow.backends.local"):
        new = tuner.submit(spec(small_data, epochs=100, budget_s=8))
    said = f"resuming from job {old}'s checkpoint at step {step}"
    assert f"tuning job {new}: {said}" in caplog.text
    first = tuner.get(new)
    assert first.stats["resume"] == said and first.stats["resumed_from"] == {"job": old, "step": step}
    st = jobs.wait(tuner.root / new, 600)
    assert st.state == JobState.SUCCEEDED, st.error
    assert st.step > step  # trained on from the checkpoint, for what was left of the 8 s budget
    old_curve = [tuple(x) for x in cancelled.metrics["train_loss"]]
    assert old_curve and [tuple(x) for x in st.metrics["train_loss"][: len(old_curve)]] == old_curve
    # Per-epoch checkpoints the cancelled job had uploaded are the new job's too, under its own models folder.
    models = tmp_path / "root" / "models"
    before = [c for c in st.checkpoints if c["step"] <= step]
    assert [c["epoch"] for c in before] == list(range(1, step // 5 + 1))
    assert all(c["endpoint"].startswith(str(models / new)) and Path(c["endpoint"], "config.json").is_file()
               for c in before)


@pytest.mark.slow
def test_training_is_deterministic(small_data):
    from sftflow.backends.local import extractive_training as X

    train, val = read_examples(small_data[0])[:16], read_examples(small_data[1])[:4]

    def train_once(seed):
        t = X.Trainer(X.TrainParams(epochs=1, budget_s=600, seed=seed), train, val)
        t.prepare()
        assert t.run(lambda i: None, lambda s: None, lambda: False) == "done"
        return t.state()

    a, b, c = train_once(0), train_once(0), train_once(1)
    assert a["step"] == 2
    for k in a["adapter"]:
        assert torch_equal(a["adapter"][k], b["adapter"][k]), k
    assert any(not torch_equal(a["adapter"][k], c["adapter"][k]) for k in a["adapter"])
    assert any(not torch_equal(a["adapter"][k], 0 * a["adapter"][k]) for k in a["adapter"] if "lora_B" in k)


def torch_equal(x, y) -> bool:
    import torch

    return bool(torch.equal(x, y))


# --------------------------------------------------------------------------- real-text training (issue 14)


def fake_encoder(calls):
    """An encoder stand-in for the sentence cache: hidden[t] = sentence length + t, base = length."""
    import torch

    def encode(chunk):
        calls.append(list(chunk))
        T = max(len(s) for s in chunk)
        mask = torch.tensor([[1] * len(s) + [0] * (T - len(s)) for s in chunk])
        hidden = torch.stack([(len(s) + torch.arange(T, dtype=torch.float32)).unsqueeze(1).repeat(1, 4)
                              for s in chunk])
        base = torch.tensor([[float(len(s))] * 4 for s in chunk])
        return hidden, mask, base
    return encode


def test_sentence_cache_reads_back_by_id_and_is_reused_by_content(tmp_path):
    import torch

    from sftflow.backends.local import sentence_cache as C

    sents = ["abcde", "ab", "abcdefghij", "abc"]
    key = C.cache_key(sents, {"m": 1})
    assert key != C.cache_key(sents[:3], {"m": 1}) and key != C.cache_key(sents, {"m": 2})
    (tmp_path / f".{key}-leftover").mkdir()  # an interrupted build is never taken for a finished one
    calls: list = []
    cache, reused = C.build(tmp_path, key, sents, fake_encoder(calls), hidden_size=4, batch=2)
    assert not reused and sorted(s for c in calls for s in c) == sorted(sents)
    assert cache.lengths([0, 1, 2, 3]).tolist() == [5, 2, 10, 3]  # ids are positions in `sents`
    hidden, mask = cache.hidden([2, 1])
    assert hidden.shape == (2, 10, 4) and mask.sum(1).tolist() == [10, 2]
    assert torch.equal(hidden[0, :, 0], 10 + torch.arange(10.0))
    assert torch.equal(hidden[1, :2, 0], torch.tensor([2.0, 3.0]))
    assert torch.equal(hidden[1, 2:], torch.zeros(8, 4))  # padding
    assert cache.base[3].tolist() == [3.0] * 4
    cache.close()
    calls.clear()
    again, reused = C.build(tmp_path, key, sents, fake_encoder(calls), hidden_size=4)
    assert reused and calls == []  # same content: nothing encoded
    assert torch.equal(again.hidden([0])[0][0, :, 0], 5 + torch.arange(5.0))
    again.close()


KILLED_BUILD = """
import os, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from test_local_backend import fake_encoder
from sftflow.backends.local import sentence_cache as C
encode = fake_encoder([])
def slow(chunk):
    Path(sys.argv[2]).touch()  # a batch is being written: time to kill
    time.sleep(30)
    return encode(chunk)
C.build(Path(sys.argv[1]), "k", ["abc", "abcdef", "ab", "a"], slow, hidden_size=4, batch=1)
"""


def test_sentence_cache_killed_while_encoding_leaves_no_entry(tmp_path):
    import subprocess
    import sys

    from sftflow.backends.local import sentence_cache as C

    root, started = tmp_path / "cache", tmp_path / "started"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, str(root), str(started), str(Path(__file__).parent)])
    try:
        wait_for(started.exists, timeout=60, poll=0.05)
    finally:
        proc.kill()  # SIGKILL: no clean-up runs
        proc.wait()
    assert not (root / "k").exists()  # only a temporary folder is left, never taken for an entry
    calls: list = []
    cache, reused = C.build(root, "k", ["abc", "abcdef", "ab", "a"], fake_encoder(calls), hidden_size=4)
    assert not reused and cache.lengths([0, 1, 2, 3]).tolist() == [3, 6, 2, 1]
    cache.close()

    def interrupted(chunk):
        raise KeyboardInterrupt  # Ctrl-C while encoding, in-process: the temporary folder goes too

    with pytest.raises(KeyboardInterrupt):
        C.build(root, "k2", ["abc", "ab"], interrupted, hidden_size=4)
    assert not [p for p in root.iterdir() if "k2" in p.name]


def test_labels_oracle_and_k():
    from sftflow.backends.local import extractive_training as X
    from sftflow.backends.local.text import Example

    sents = ["The council approved the new budget on Monday.", "It rained in the morning.",
             "Schools will get ten million dollars more.", "A dog barked."]
    ref = "The council approved a budget giving schools ten million dollars more."
    assert X.oracle_indices(sents, ref, 3) == [0, 2]
    t = X.sentence_targets(sents, ref, 2)
    assert abs(float(t.sum()) - 1) < 1e-6 and {int(i) for i in t.argsort(descending=True)[:2]} == {0, 2}
    art = " ".join(["Word " * 9 + "end."] * 10)  # sentences of 10 words
    ex = [Example(prompt=f"Summarize:\n\n{art}", answer="w " * n) for n in (20, 30, 31)]
    assert X.typical_k(ex) == 3  # median summary 30 words / 10 words a sentence
    assert X.typical_k([Example(prompt=f"Summarize:\n\n{art}", answer="w " * 200)]) == 5  # capped


def test_warmup_then_linear_decay():
    from sftflow.backends.local.extractive_training import warmup_linear

    f = [warmup_linear(s, 40) for s in range(40)]
    assert f[0] == 0.25 and f[3] == 1.0  # 4 warm-up steps
    assert all(a >= b for a, b in zip(f[3:], f[4:])) and abs(f[-1] - 0.1) < 1e-9


class ToyTrainer:
    """A BudgetedTrainer over one scalar whose validation loss is best at step `best_at`."""

    @staticmethod
    def make(best_at: int, steps: int, patience: float, epochs: int = 1):
        import torch

        from sftflow.backends.local.training import BudgetedTrainer, TrainParams

        class Toy(BudgetedTrainer):
            def __init__(self):
                super().__init__(TrainParams(epochs=epochs, budget_s=600, batch_articles=1, val_per_epoch=steps,
                                             patience_epochs=patience, checkpoint_every_s=1e9))
                self.w = torch.nn.Parameter(torch.zeros(()))
                self.opt = torch.optim.SGD([self.w], lr=1.0)
                self.train = list(range(steps))  # one step per example: `steps` steps an epoch
                self.val = [0]

            def _loss(self, batch):
                return -self.w  # each step adds 1 to w

            def val_loss(self):
                return abs(float(self.w.detach()) - best_at)

            def snapshot(self):
                return {"w": self.w.detach().clone()}

            def restore(self, snap):
                with torch.no_grad():
                    self.w.copy_(snap["w"])

        return Toy()


def test_best_validation_state_is_kept_and_early_stop():
    t = ToyTrainer.make(best_at=3, steps=10, patience=0)
    assert t.run(lambda i: None, lambda s: None, lambda: False) == "done"
    assert t.step == 10 and float(t.w) == 3.0 and t.best["step"] == 3  # restored to the best
    t = ToyTrainer.make(best_at=3, steps=4, patience=0.5, epochs=5)
    assert t.run(lambda i: None, lambda s: None, lambda: False) == "early_stop"
    assert t.step == 5 and float(t.w) == 3.0  # half an epoch past the best, after the first epoch
    t = ToyTrainer.make(best_at=0, steps=10, patience=0.2, epochs=3)
    assert t.run(lambda i: None, lambda s: None, lambda: False) == "early_stop"
    assert t.step == 10 and float(t.w) == 0.0  # never before one full epoch


def test_checkpoint_loads_as_data_and_a_pickle_payload_is_refused(tmp_path):
    import pickle

    import torch

    from sftflow.backends.local.runner import load_checkpoint

    t = ToyTrainer.make(best_at=1, steps=2, patience=0)
    t.run(lambda i: None, lambda s: None, lambda: False)
    state = {"step": t.step, "elapsed_s": 1.5, "metrics": t.metrics, "best": t.best,
             "head": {"weight": torch.ones(2, 3)}, "opt": t.opt.state_dict()}
    torch.save(state, tmp_path / "checkpoint.pt")
    back = load_checkpoint(tmp_path / "checkpoint.pt")
    assert back["step"] == 2 and torch.equal(back["head"]["weight"], torch.ones(2, 3))
    assert back["best"]["weights"]["w"] == 1.0

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"step": 1, "x": Payload()}, f)
    with pytest.raises(ValueError, match=r"evil.pt: not a checkpoint this runner wrote, refused"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()
    torch.save({"step": 1, "x": Payload()}, tmp_path / "evil2.pt")  # the zip format too
    assert not marker.exists()
    with pytest.raises(ValueError, match="refused"):
        load_checkpoint(tmp_path / "evil2.pt")
    assert not marker.exists()


@pytest.mark.slow
def test_encoding_is_outside_the_budget_and_reused_by_the_next_run(small_data, tmp_path):
    from sftflow.backends.local import extractive_training as X

    train, val = read_examples(small_data[0])[:16], read_examples(small_data[1])[:4]
    params = X.TrainParams(epochs=1, budget_s=1.0, batch_articles=4)
    t = X.Trainer(params, train, val, cache_dir=tmp_path / "cache")
    encode, calls = t._encode, []

    def slow_encode(chunk):  # an encoding pass that alone outlasts the training budget
        calls.append(len(chunk))
        time.sleep(1.5)
        return encode(chunk)

    t._encode = slow_encode
    t.prepare()
    assert calls and t.extra_stats["encode_s"] > params.budget_s and not t.extra_stats["encode_cached"]
    assert t.run(lambda i: None, lambda s: None, lambda: False) in ("done", "budget")
    assert t.step >= 1  # the budget starts after encoding
    t.close()

    again = X.Trainer(params, train, val, cache_dir=tmp_path / "cache")
    again._encode = lambda chunk: pytest.fail("same sentences: the cache should have been reused")
    again.prepare()
    assert again.extra_stats["encode_cached"]
    assert again.extra_stats["sentence_count"] == t.extra_stats["sentence_count"]
    # The top layers run in length-sorted chunks: the same embeddings as one padded batch.
    import torch

    from sftflow.backends.local.extractive import upper_layers

    ids = [i for a in again.train[:6] for i in a.ids]
    with torch.no_grad():
        hid, msk = again.cache.hidden(ids)
        assert torch.allclose(again._embed(ids), upper_layers(again.model, hid, msk, 1), atol=1e-5)
    again.close()

    other = X.Trainer(X.TrainParams(lora_layers=2, budget_s=1.0), train[:4], [], cache_dir=tmp_path / "cache")
    other.prepare()  # other frozen layers: encoded anew, not read from the first run's cache
    assert not other.extra_stats["encode_cached"]
    other.close()
