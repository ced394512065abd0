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
from sftflow.backends.local import LocalTuner, jobs, make_local_generator
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
    base = dict(base_model="minilm-extractive", train_uri=data[0], val_uri=data[1], epochs=1, adapter_size=4,
                learning_rate_multiplier=1.0, display_name="t", key=key, seed=0, budget_s=60.0)
    base.update(kw)
    return TuningSpec(**base)


def wait_for(pred, timeout=90.0, poll=0.2):
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
    from sftflow.backends.base import BackendError

    s = Settings(local_root=tmp_path / "root")
    with pytest.raises(BackendError, match="no such local tuning job"):
        LocalTuner(s).get("job-nope")
    assert LocalTuner(s).find("k") == []
    with pytest.raises(BackendError):
        make_local_generator(s, str(tmp_path / "no-such-model"))


# --------------------------------------------------------------------------- jobs


@pytest.mark.slow
def test_lifecycle_success_find_and_delete(tmp_path, small_data):
    s = Settings(local_root=tmp_path / "root")
    tuner = LocalTuner(s)
    name = tuner.submit(spec(small_data, epochs=3, budget_s=900))  # all 15 steps even on 2 busy cores
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
    listed = tuner.delete_outputs(done, dry_run=True)
    assert sorted(Path(u).name for u in listed) == ["adapter.safetensors", "config.json", "head.safetensors"]
    assert all(Path(u).exists() for u in listed)
    assert tuner.delete_outputs(done, dry_run=False) == listed
    assert not any(Path(u).exists() for u in listed)


@pytest.mark.slow
def test_cancel(tmp_path, small_data):
    tuner = LocalTuner(Settings(local_root=tmp_path / "root"))
    name = tuner.submit(spec(small_data, epochs=100, budget_s=300))
    wait_for(lambda: tuner.get(name).step)
    tuner.cancel(name)
    st = jobs.wait(tuner.root / name, 60)
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
        ckpt = torch.load(job_dir / "checkpoint.pt", weights_only=False)
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
    st = jobs.wait(job_dir, 120)
    assert st.state == JobState.SUCCEEDED, st.error
    assert st.stats["restarts"] == 1
    steps = [s for s, _ in st.metrics["train_loss"]]
    # The curve is kept across the restart: it extends what the checkpoint held.
    assert steps == sorted(steps) and [tuple(x) for x in st.metrics["train_loss"][: len(ckpt_curve)]] == ckpt_curve


@pytest.mark.slow
def test_training_is_deterministic(small_data):
    from sftflow.backends.local import extractive as X

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
