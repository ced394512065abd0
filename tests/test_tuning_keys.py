"""Intent keys users already hold stay byte-identical; a hyperparameter added later changes no key at its default.

The golden keys below were computed by the code before the hyperparameter type existed (main at 16b6691, whose
`tuning_key` took epochs / adapter_size / learning_rate_multiplier by name and display_name and seed through
`**extra`). A changed key means a job already paid for is submitted and paid for again.
"""

from __future__ import annotations

import pytest
from pydantic import Field
from pydantic.dataclasses import dataclass

from sftflow.config import Settings
from sftflow.tuning.hyperparameters import Hyperparameters
from sftflow.tuning.intent import tuning_key
from sftflow.tuning.plan import build_spec
from sftflow.tuning.setup import TuningSetup

#: (dataset hashes, base model, (epochs, adapter size, lr multiplier), display name, run name, seed) → key.
GOLDEN = [
    ({"train": "md5:aaa", "val": "md5:bbb"}, "gemini-2.5-flash", (1, 4, 1.0), "sftflow-summarizer", "default", 0,
     "k5918144dee23df7e7f50"),
    ({"train": "md5:aaa"}, "gemini-2.5-flash", (2, 8, 0.5), "sftflow-summarizer", "sweep", 0,
     "k13c3ed6d0350ee58de87"),
    ({"train": "md5:Xk3/abc==", "val": "md5:Yy=="}, "minilm-extractive", (3, 16, 2.5), "my-model", "exp2", 7,
     "k5024be2dcf77d046589c"),
    ({"train": "sha:123", "val": "sha:456"}, "gemini-2.5-flash", (1, 1, 1e-05), "sftflow-summarizer", "default", 0,
     "k0eef5a75fbc29f662c6d"),
]

TRAIN = '{"contents": [{"role": "user", "parts": [{"text": "a"}]}, {"role": "model", "parts": [{"text": "b"}]}]}\n'
VAL = '{"contents": [{"role": "user", "parts": [{"text": "c"}]}, {"role": "model", "parts": [{"text": "d"}]}]}\n'
#: build_spec (flows/tune.build_spec then) on TRAIN / VAL: (settings changed, with val?) → key.
GOLDEN_SPECS = [
    ({}, True, "kd4230ddbf876bd37c659"),
    ({}, False, "k465c9477366c1ce1e245"),
    ({"epochs": 2, "adapter_size": 8, "learning_rate_multiplier": 0.5, "run_name": "sweep"}, True,
     "k5d45193f147b8cad79ed"),
    ({"epochs": 2, "adapter_size": 8, "learning_rate_multiplier": 0.5, "run_name": "sweep"}, False,
     "k0d33427fc6edaf2c181f"),
    ({"backend": "vertex", "project": "p", "seed": 3}, True, "k350e4cfb40b422b57e34"),
    ({"backend": "vertex", "project": "p", "seed": 3}, False, "k7d6a308db0841cfe51ca"),
]


@dataclass(frozen=True)
class WithWarmup(Hyperparameters):
    """The hyperparameters with one more field, as a developer would add it (e.g. Vertex's warmup ratio)."""

    warmup_ratio: float = Field(0.0, ge=0, lt=1, json_schema_extra={"vertex": "warmup_ratio", "local": "warmup_ratio",
                                                                     "short": "w", "choice": "a ratio"})


def key_of(case, hp_type=Hyperparameters, **more) -> str:
    hashes, base_model, (e, a, lr), display_name, run_name, seed, _ = case
    return tuning_key(hashes, base_model=base_model, hyperparameters=hp_type(e, a, lr, **more), run_name=run_name,
                      display_name=display_name, seed=seed)


@pytest.mark.parametrize("case", GOLDEN, ids=[c[-1] for c in GOLDEN])
def test_keys_of_intents_already_run_are_unchanged(case):
    assert key_of(case) == case[-1]


@pytest.mark.parametrize("changes, with_val, golden", GOLDEN_SPECS, ids=[g for *_, g in GOLDEN_SPECS])
def test_keys_built_from_a_run_are_unchanged(changes, with_val, golden, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.jsonl").write_text(TRAIN)
    (tmp_path / "val.jsonl").write_text(VAL)
    s = Settings(_env_file=None, local_root="root").model_copy(update=changes)
    assert build_spec(TuningSetup.from_settings(s), "train.jsonl", "val.jsonl" if with_val else None).key == golden


@pytest.mark.parametrize("case", GOLDEN, ids=[c[-1] for c in GOLDEN])
def test_a_new_hyperparameter_at_its_default_changes_no_key_and_a_set_one_does(case):
    assert key_of(case, WithWarmup) == case[-1]  # added, left at its default: every existing intent is the same
    assert key_of(case, WithWarmup, warmup_ratio=0.0) == case[-1]
    changed = {key_of(case, WithWarmup, warmup_ratio=r) for r in (0.1, 0.25)}
    assert case[-1] not in changed and len(changed) == 2  # set: a new intent, and each value its own


def test_a_new_hyperparameter_keeps_labels_and_backend_names():
    old, new = Hyperparameters(2, 8, 0.5), WithWarmup(2, 8, 0.5)
    assert new.label == old.label == "e2-a8-lr0p5"
    assert WithWarmup(2, 8, 0.5, warmup_ratio=0.1).label == "e2-a8-lr0p5-w0p1"
    assert new.for_backend("vertex") == {"epoch_count": 2, "adapter_size": 8, "learning_rate_multiplier": 0.5,
                                         "warmup_ratio": 0.0}
