"""The champion challenge (sftflow.selection.challenge) and the cleanup guard, called as domain functions on a local
storage root: no Prefect, no server. The pipeline's flow-level check is in tests/test_pipeline_champion.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sftflow.selection import champion
from sftflow.infra import storage
from sftflow.backends.local import LocalTuner
from sftflow.cleanup.plan import TUNED_OUTPUT, execute, plan_cleanup
from sftflow.config import Settings
from sftflow.records import Evaluation, TunedModel
from sftflow.evaluation.results import ExampleResult, results_to_jsonl
from sftflow.evaluation.rouge import METRICS
from sftflow.evaluation.stats import compare
from sftflow.selection.challenge import ChampionGone, challenge, pipeline_candidate


def results(scores, model: str) -> list[ExampleResult]:
    return [ExampleResult(id=f"e{i}", model=model, prompt_chars=10, reference="r", output="x", finish_reason="STOP",
                          scores={m: float(s) for m in METRICS}, attempts=1) for i, s in enumerate(scores)]


BASE = np.random.default_rng(0).uniform(0.2, 0.4, 40)


class World:
    """A local storage root with tuned models `a`, `b` (answers like `a`), `c` (better) and `d` (best), each a job whose model
    folder exists, its results on disk, and an `evaluate` that serves the champion's results and counts calls."""

    def __init__(self, tmp_path):
        self.settings = Settings(_env_file=None, local_root=tmp_path / "root")
        self.root = self.settings.storage_root
        self.tuner = LocalTuner(self.settings)
        self.calls: list[tuple[str, str]] = []
        self.uris = {}
        for name, lift in (("a", 0.05), ("b", 0.05), ("c", 0.15), ("d", 0.3)):
            self.uris[self.endpoint(name)] = storage.write_text(
                storage.join(self.root, "runs", name, "eval", "tuned", "results.jsonl"),
                results_to_jsonl(results(np.clip(BASE + lift, 0, 1), name)))
            storage.write_text(storage.join(self.root, "models", f"job-{name}", "config.json"), "{}")

    def endpoint(self, name: str) -> str:
        return storage.join(self.root, "models", f"job-{name}")

    def candidate(self, name: str) -> dict:
        return {"label": f"{name}/tuned", "job": f"job-{name}", "key": f"k{name}", "tuned_model": f"local:job-{name}",
                "endpoint": self.endpoint(name), "hyperparameters": {"epochs": 1},
                "results_uri": self.uris[self.endpoint(name)]}

    def evaluate(self, model: str, label: str) -> Evaluation:
        self.calls.append((model, label))
        return Evaluation(label=label, model=model, results_uri=self.uris[model], report_uri="", plot_uri="",
                          summary={}, counts={})

    def challenge(self, name: str | None, margin: float = 0.0):
        return challenge(self.root, name or "x", self.candidate(name) if name else None, "the base wins",
                         evaluate=self.evaluate, tuner=self.tuner, margin=margin)


def test_pipeline_candidate_must_beat_the_base_significantly_first(tmp_path):
    base = results(BASE, "base")
    uri = storage.write_text(str(tmp_path / "tuned.jsonl"), "")
    tuned_model = TunedModel(job="job-a", key="ka", tuned_model="local:job-a", endpoint="ep/a",
                             cost_estimate={"total_usd": 0.5})
    tuned = Evaluation(label="tuned", model="ep/a", results_uri=uri, report_uri="", plot_uri="", summary={}, counts={})
    win = compare(base, results(BASE + 0.05, "t"), seed=0).to_json()
    hyper = {"epochs": 2, "adapter_size": 8, "learning_rate_multiplier": 0.5}
    entry, reason = pipeline_candidate("a", hyper, tuned_model, tuned, win)
    assert entry["label"] == "a/e2-a8-lr0p5" and entry["endpoint"] == "ep/a" and entry["results_uri"] == uri
    assert entry["cost_usd"] == 0.5 and entry["vs_base"]["rougeL"]["ci_low"] > 0 and reason.startswith("a/e2-a8")
    assert entry["hyperparameters"] == hyper
    flat = compare(base, results(BASE, "t"), seed=0).to_json()
    entry, reason = pipeline_candidate("a", hyper, tuned_model, tuned, flat)
    assert entry is None and reason.startswith("no configuration beats the base model significantly on ROUGE-L")


def test_promoted_on_a_significant_win_kept_otherwise_and_each_decision_made_once(tmp_path):
    w = World(tmp_path)
    assert w.challenge(None).reason == "no candidate: the base wins" and champion.history(w.root) == []

    first = w.challenge("a")
    assert first.promoted and first.seq == 1 and first.reason == "no champion yet: a/tuned becomes the first one"
    assert w.challenge("a").reason == "a/tuned is already the champion (#1)"
    assert w.calls == []  # no champion to evaluate, then nothing to decide

    same = w.challenge("b")
    assert not same.promoted and same.seq == 2 and w.calls == [(w.endpoint("a"), "champion")]
    assert "the lower bound is not above promotion_margin 0 points, so a/tuned stays champion" in same.reason
    again = w.challenge("b")  # the rerun of an unchanged run: no evaluation, no second entry
    assert (again.promoted, again.reason, again.seq) == (False, same.reason, 2) and len(w.calls) == 1
    assert len(champion.history(w.root)) == 2

    assert not w.challenge("c", margin=0.5).promoted  # a margin is part of the question: asked again
    better = w.challenge("c")
    assert better.promoted and "c/tuned beats champion a/tuned on ROUGE-L by +10.0 points" in better.reason
    rec = champion.record(w.root)
    assert [e["event"] for e in rec["history"]] == ["promoted", "kept", "kept", "promoted"]
    assert rec["current"]["model"]["endpoint"] == w.endpoint("c") and rec["current"]["against"] == 1


class MarkingTuner(LocalTuner):
    """The local tuner, recording each champion mark as (marked, taken off) endpoints, as Vertex's alias would."""

    def __init__(self, settings):
        super().__init__(settings)
        self.marks: list[tuple[str, str | None]] = []

    def mark_champion(self, status, checkpoint_id=None, previous=None):
        self.marks.append((status.endpoint, previous.endpoint if previous else None))
        return None


def test_a_promotion_that_loses_a_race_hands_the_mark_to_the_winner(tmp_path):
    w = World(tmp_path)
    w.tuner = MarkingTuner(w.settings)
    w.challenge("a")
    plain = w.evaluate

    def evaluate_while_another_process_promotes_d(model, label):
        if not any(e["model"].get("endpoint") == w.endpoint("d") for e in champion.history(w.root)):
            d = {k: w.candidate("d")[k] for k in ("label", "job", "endpoint", "tuned_model")}
            champion.append(w.root, event="promoted", model=d, reason="d wins elsewhere", against=1)
        return plain(model, label)

    w.evaluate = evaluate_while_another_process_promotes_d
    lost = w.challenge("c")  # c beats a and is marked, then finds d promoted meanwhile, hands it the mark, loses to d
    assert not lost.promoted and "stays champion" in lost.reason
    a, c, d = (w.endpoint(n) for n in "acd")
    assert w.tuner.marks == [(a, None), (c, a), (d, c)]
    assert champion.current(w.root)["model"]["endpoint"] == d
    assert [e["event"] for e in champion.history(w.root)] == ["promoted", "promoted", "kept"]


def test_a_deleted_champion_is_a_one_line_error_until_it_is_retired(tmp_path, capsys):
    from sftflow.cli.main import main

    w = World(tmp_path)
    w.challenge("a")
    storage.delete(storage.join(w.endpoint("a"), "config.json"))  # its model is gone (cleanup by hand)
    with pytest.raises(ChampionGone) as err:
        w.challenge("b")
    msg = str(err.value)
    assert msg.startswith("champion #1 a/tuned (run a) no longer exists: its endpoint ") and "\n" not in msg
    assert "retire it with `sftflow champion --retire`" in msg
    assert w.calls == [] and len(champion.history(w.root)) == 1  # nothing asked, nothing recorded

    assert main(["champion", "--retire", "--local-root", str(w.settings.local_root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["retired: #1 a/tuned", "champion: none (#1 was retired)"]
    assert champion.current(w.root) is None
    assert w.challenge("b").reason == "no champion yet: b/tuned becomes the first one"


def _tuning_record(w: World, run: str, job: str) -> str:
    return storage.write_text(storage.join(w.root, "tuning", f"k{run * 20}.json"), json.dumps(
        {"name": job, "state": "SUCCEEDED", "tuned_model": f"local:{job}", "endpoint": w.endpoint(run),
         "run_name": run, "spec": {}}))


def test_cleanup_keeps_the_champion_unless_asked_and_then_retires_it(tmp_path):
    w = World(tmp_path)
    w.challenge("a")
    record = _tuning_record(w, "a", "job-a")
    model_file = storage.join(w.endpoint("a"), "config.json")
    s = w.settings.model_copy(update={"run_name": "a"})

    plan = plan_cleanup(s, lambda: w.tuner)
    kept = {i.uri: i.reason for i in plan.skipped}
    assert kept[model_file] == kept[record] == ("kept: champion #1 a/tuned; --include-champion deletes it and "
                                                "retires the champion")
    assert [i.uri for i in plan.delete] == [w.uris[w.endpoint("a")]] and plan.retire is None
    execute(plan, lambda: w.tuner, run_root=s.run_root)
    assert storage.exists(model_file) and storage.exists(record) and champion.current(w.root)["seq"] == 1

    plan = plan_cleanup(s, lambda: w.tuner, include_champion=True)
    assert {(i.uri, i.kind) for i in plan.delete} >= {(model_file, TUNED_OUTPUT)} and plan.retire["seq"] == 1
    execute(plan, lambda: w.tuner, run_root=s.run_root)
    assert not storage.exists(model_file) and not storage.exists(record)
    assert champion.current(w.root) is None
    last = champion.history(w.root)[-1]
    assert (last["event"], last["against"]) == ("retired", 1) and "cleanup --include-champion" in last["reason"]
    assert champion.lines(champion.record(w.root))[0] == "champion: none (#1 was retired)"
