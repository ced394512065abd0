"""prepare_data end to end on real files, local storage and the GCS emulator."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flows.prepare_data import prepare_data
from sftflow.infra import storage
from sftflow.data.samples import sample_paths
from tests.flowutil import task_states

pytestmark = pytest.mark.slow


def _run(config):
    state = prepare_data(config=config, return_state=True)
    return state.result(), task_states(state, expect={"download": 3, "convert": 2, "validate": 3})


def test_rerun_is_cached_and_uploads_nothing(tmp_path, gcs_bucket):
    config = {"local_root": str(tmp_path / "root"), "bucket": gcs_bucket, "limit": 100}
    out1, states1 = _run(config)
    assert out1["train"].startswith(f"{gcs_bucket}/datasets/train/train-")
    assert sorted(out1["uploaded"]) == sorted([out1["train"], out1["val"], out1["test"]])
    assert out1["summaries"][0]["examples"] == 100
    gens = {u: storage.fingerprint(u) for u in out1["uploaded"]}

    out2, states2 = _run(config)
    for name in ("download", "convert", "validate"):
        assert set(states2[name]) == {"Cached"}, (name, states2[name])
    assert out2["uploaded"] == []
    assert {u: storage.fingerprint(u) for u in gens} == gens  # objects untouched (same generation)


def test_changed_input_is_never_served_from_cache(tmp_path):
    train = tmp_path / "train.jsonl"
    shutil.copy(sample_paths()["train"], train)
    config = {"local_root": str(tmp_path / "root"), "train_uri": str(train), "limit": 5}
    out1, _ = _run(config)
    first = Path(out1["train"]).read_text().splitlines()[0]

    lines = train.read_text().splitlines()
    train.write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n")  # same size, new order
    out2, states2 = _run(config)
    assert sorted(states2["convert"]) == ["Cached", "Completed"]  # val unchanged: cached; train: redone
    assert out2["train"] != out1["train"]
    assert Path(out2["train"]).read_text().splitlines()[0] != first


def test_cli_bad_file_exits_nonzero_and_uploads_nothing(tmp_path, gcs_emulator, gcs_bucket, prefect_api_env):
    good = Path(sample_paths()["train"]).read_text().splitlines()
    bad = tmp_path / "bad_train.jsonl"
    broken = json.loads(good[2])
    broken["messages"][-1]["role"] = "robot"
    bad.write_text("\n".join([good[0], good[1], json.dumps(broken), *good[3:10]]) + "\n")
    env = dict(os.environ, STORAGE_EMULATOR_HOST=gcs_emulator, **prefect_api_env)
    proc = subprocess.run(
        [sys.executable, "-m", "sftflow.cli.main", "prepare", "--train", str(bad), "--bucket", gcs_bucket,
         "--local-root", str(tmp_path / "root")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"{bad}:3: messages[" in proc.stderr
    assert "role" in proc.stderr
    assert storage.list_uris(gcs_bucket + "/") == []
