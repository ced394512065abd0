"""Step: judge baseline vs candidate pairwise on the examples both answered, and save judgements.jsonl,
judgement.json, win_tie_loss.png and report.md under runs/<run>/judge/ (the list is JUDGE_OUTPUTS)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from sftflow.config import Settings
from sftflow.cost import prices
from sftflow.cost.report import EvalCost
from sftflow.data.testset import read_test_csv, split_prompt  # noqa: F401 (split_prompt: named here too)
from sftflow.evaluation import stats
from sftflow.evaluation.compare import read_results
from sftflow.evaluation.engine import check_error_rate
from sftflow.infra import layout, storage
from sftflow.infra.progress import ProgressFn
from sftflow.judging import report, summary
from sftflow.judging.pairs import Judge, JudgedPair, Pair, pair_line
from sftflow.judging.run import judge_pairs
from sftflow.records import Judgement

#: The objects judge_and_save writes under its out_dir.
JUDGE_OUTPUTS = ("judgements.jsonl", "judgement.json", "win_tie_loss.png", "report.md")
MAX_DEFAULT_SAMPLES = 100  # judge_samples unset: the evaluation's samples, at most this many
NOT_IN_KEY = {"in_key": False}


@dataclass(frozen=True)
class JudgeSpec:
    """What judging uses of Settings. Its identity (cache key, checkpoint name) is every field not marked
    NOT_IN_KEY, plus the judge's own `identity()`, both answer sets, the test set and the sample."""

    judge: str  # resolved: "local" or "vertex" ("none" never reaches a JudgeSpec)
    judge_model: str | None
    judge_samples: int
    project: str | None
    region: str
    vertex_base_url: str | None
    seed: int  # bootstrap seed
    work_dir: Path = field(metadata=NOT_IN_KEY)
    generation_prices_usd: dict[str, tuple[float, float]] = field(default_factory=dict, metadata=NOT_IN_KEY)
    concurrency: int = field(default=8, metadata=NOT_IN_KEY)
    rpm: float = field(default=300.0, metadata=NOT_IN_KEY)
    max_attempts: int = field(default=6, metadata=NOT_IN_KEY)
    max_error_rate: float = field(default=0.05, metadata=NOT_IN_KEY)
    request_timeout: float = field(default=120.0, metadata=NOT_IN_KEY)
    vertex_access_token: SecretStr | None = field(default=None, repr=False, metadata=NOT_IN_KEY)

    @classmethod
    def from_settings(cls, s: Settings) -> JudgeSpec | None:
        """None when the run has no judge (`judge: none`)."""
        kind = resolve_judge(s.judge, s.backend)
        if kind is None:
            return None
        names = {f.name for f in dataclasses.fields(cls)} - {"judge", "judge_samples"}
        return cls(judge=kind, judge_samples=s.judge_samples or min(s.samples, MAX_DEFAULT_SAMPLES),
                   **{n: getattr(s, n) for n in names})

    def identity(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("in_key", True)}


def resolve_judge(judge: str, backend: str) -> str | None:
    """'auto' → the backend's judge; 'none' → None; else as given."""
    if judge == "none":
        return None
    return backend if judge == "auto" else judge


def make_judge(spec: JudgeSpec) -> Judge:
    if spec.judge == "local":
        from sftflow.judging.local import LocalJudge

        return LocalJudge()
    from sftflow.judging.vertex import VertexJudge

    return VertexJudge(spec)


def judge_label(spec: JudgeSpec) -> str:
    """How reports name the judge, without building it (no client, no model load)."""
    from sftflow.judging import local, vertex

    return local.LABEL if spec.judge == "local" else vertex.label(spec.judge_model)


def build_pairs(baseline_uri: str, candidate_uri: str, test_path: str, n: int) -> list[Pair]:
    """The first `n` examples (baseline order) that both sides answered without error, with their prompts."""
    b, c = read_results(baseline_uri), read_results(candidate_uri)
    paired = stats.pair(b, c)
    ids = paired.ids[:n]
    by_b, by_c = {r.id: r for r in b}, {r.id: r for r in c}
    prompts = {ex.id: ex for ex in read_test_csv(test_path)}
    missing = [i for i in ids if i not in prompts]
    if missing:
        raise ValueError(f"{test_path}: has no example {missing[0]!r} that the results name "
                         f"({len(missing)} missing): judge with the test set they were evaluated on")
    out = []
    for i in ids:
        instruction, article = split_prompt(prompts[i].input_text)
        out.append(Pair(id=i, instruction=instruction, context=article, baseline=by_b[i].output,
                        candidate=by_c[i].output, reference=by_c[i].reference or None,
                        baseline_rouge_l=by_b[i].scores["rougeL"], candidate_rouge_l=by_c[i].scores["rougeL"]))
    return out


def judge_identity(spec: JudgeSpec, baseline_uri: str, candidate_uri: str, test_path: str, out_dir: str) -> list:
    """Both answer sets' and the test set's content, the judge and its settings, the sample, where it writes."""
    return [spec.identity(), storage.fingerprint(baseline_uri), storage.fingerprint(candidate_uri),
            storage.fingerprint(test_path), out_dir]


def judge_cost(spec: JudgeSpec, judged: list[JudgedPair]) -> dict[str, Any] | None:
    """The judging's cost as a cost-table row (sftflow.cost.report.EvalCost); None on the local judge."""
    if spec.judge == "local":
        return None
    from sftflow.judging.vertex import DEFAULT_JUDGE_MODEL

    model = (spec.judge_model or DEFAULT_JUDGE_MODEL).rsplit("/", 1)[-1]
    price = prices.price_for(model, "vertex", spec.generation_prices_usd)
    tin, tout = sum(p.input_tokens for p in judged), sum(p.output_tokens for p in judged)
    return dataclasses.asdict(EvalCost(label="judge", model=model, priced_as=model, examples=len(judged),
                                       input_tokens=tin, output_tokens=tout,
                                       usd=None if price is None else price.usd(tin, tout),
                                       source=price.source if price else "no list price", estimated=True))


def estimate_note(spec: JudgeSpec | None, test_path: str) -> str | None:
    """A line for the cost gate: what the vertex judge will roughly cost on this test set, before anything runs
    (each of `judge_samples` pairs asked twice; answers taken as long as the reference; explanation ~100 tokens).
    None when no judge is billed (no judge, or the local one)."""
    if spec is None or spec.judge != "vertex":
        return None
    from sftflow.judging.vertex import DEFAULT_JUDGE_MODEL, SAMPLING_COUNT, TEMPLATE_TOKENS

    examples = read_test_csv(test_path, limit=spec.judge_samples)
    tin = sum(2 * SAMPLING_COUNT * ((len(ex.input_text) + 3 * len(ex.output_text)) // 4 + TEMPLATE_TOKENS)
              for ex in examples)
    tout = 2 * SAMPLING_COUNT * 100 * len(examples)
    model = (spec.judge_model or DEFAULT_JUDGE_MODEL).rsplit("/", 1)[-1]
    price = prices.price_for(model, "vertex", spec.generation_prices_usd)
    usd = "an unknown amount (no list price)" if price is None else f"about ${price.usd(tin, tout):.4f}"
    return (f"pairwise judge (vertex, {model}): {usd} for {len(examples)} pairs × 2 orders (~{tin:,} input, ~{tout:,} "
            "output tokens, characters / 4; not part of the tuning cap)")


def judge_and_save(spec: JudgeSpec, baseline_uri: str, candidate_uri: str, test_path: str, out_dir: str, *,
                   comparison: dict[str, Any] | None = None, on_progress: ProgressFn | None = None,
                   judge: Judge | None = None) -> Judgement:
    """Judge the first `judge_samples` pairs in both orders (checkpointed, resumable) and write the outputs.
    More than `max_error_rate` errored pairs raise EvaluationFailed; fewer come back in `errors`."""
    judge = judge or make_judge(spec)
    pairs = build_pairs(baseline_uri, candidate_uri, test_path, spec.judge_samples)
    ident = hashlib.sha256(json.dumps([judge_identity(spec, baseline_uri, candidate_uri, test_path, out_dir),
                                       judge.identity()], default=str, sort_keys=True).encode()).hexdigest()
    checkpoint = layout.checkpoint_path(spec.work_dir, "judge", ident)
    rpm = spec.rpm if spec.judge == "vertex" else 1e9  # rpm is a quota's: the local judge has none to respect
    judged = judge_pairs(judge, pairs, checkpoint=checkpoint, concurrency=spec.concurrency, rpm=rpm,
                         max_attempts=spec.max_attempts, on_progress=on_progress, seed=spec.seed)
    errors = check_error_rate(judged, spec.max_error_rate, f"pairs by {judge.name}")  # raises above the rate
    numbers = summary.summarize(judged, seed=spec.seed)
    worst = [dict(p.to_dict(), baseline_answer=pp.baseline, candidate_answer=pp.candidate)
             for p in summary.most_disagreeing(judged) for pp in pairs if pp.id == p.id]
    cost = judge_cost(spec, judged)
    judgements_uri = storage.write_text(storage.join(out_dir, "judgements.jsonl"),
                                        "".join(pair_line(p) for p in judged), "application/jsonl")
    plot_uri = storage.write_bytes(storage.join(out_dir, "win_tie_loss.png"),
                                   report.plot_win_tie_loss(numbers, comparison, judge.label), "image/png")
    line = summary.verdict_line(numbers, judge.label)
    md = report.markdown(numbers, judge.label, worst, cost, level=1) + f"\nJudgements: `{judgements_uri}`  \n" \
        f"Plot: `{plot_uri}`\n"
    report_uri = storage.write_text(storage.join(out_dir, "report.md"), md, "text/markdown")
    out = Judgement(judge=judge.name, label=judge.label, judgements_uri=judgements_uri, report_uri=report_uri,
                    plot_uri=plot_uri, summary=numbers, disagreements=tuple(worst), errors=tuple(errors), cost=cost,
                    verdict=line)
    out.write(storage.join(out_dir, "judgement.json"))
    return out
