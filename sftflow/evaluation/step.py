"""Step: evaluate one model on the test set and save results.jsonl, summary.json,
distribution.png and report.md under runs/<run>/eval/<label>/ (the list is EVAL_OUTPUTS)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from sftflow.infra import layout, storage
from sftflow.evaluation import plots, stats
from sftflow.cost import prices
from sftflow.backends import make_generator
from sftflow.backends.base import GenerationParams, Generator
from sftflow.evaluation.batch.jobs import VertexBatchJobs
from sftflow.evaluation.batch.mode import choose_mode
from sftflow.evaluation.batch.run import BatchOptions, evaluate_batch
from sftflow.config import Settings
from sftflow.data.testset import TestExample, read_test_csv
from sftflow.evaluation.engine import check_error_rate, evaluate
from sftflow.infra.progress import ProgressFn
from sftflow.records import Evaluation, PreparedData, TunedModel
from sftflow.cost.report import evaluation_cost, with_rates
from sftflow.evaluation.report import batch_lines, evaluation_markdown, mode_lines
from sftflow.reporting import links
from sftflow.evaluation.results import ExampleResult, results_format, results_to_jsonl

log = logging.getLogger(__name__)

#: The objects evaluate_and_save writes under its eval dir.
EVAL_OUTPUTS = ("results.jsonl", "summary.json", "distribution.png", "report.md")

#: Field metadata marking a field that does not change an evaluation's answers (not in its identity).
NOT_IN_KEY = {"in_key": False}


def generation_params(s: Settings) -> GenerationParams:
    """Every GenerationParams field from its Settings field (see GenerationParams' docstring)."""
    return GenerationParams(**{f.name: getattr(s, f.metadata.get("setting", f.name))
                               for f in dataclasses.fields(GenerationParams)})


@dataclass(frozen=True)
class EvalSpec:
    """What an evaluation uses, and nothing else of Settings.

    Its identity (the cache key and the checkpoint's name) is every field not marked NOT_IN_KEY,
    so a field added here is in the key unless someone decides it does not change the answers.
    The connection fields keep Settings' names: `make_generator` reads them from this object.
    """

    backend: str
    project: str | None
    region: str
    vertex_base_url: str | None
    storage_root: str  # local backend: where tuned models ('local:<job>') live
    seed: int  # local backend: sampling seed of a causal LM
    samples: int
    generation: GenerationParams
    run_root: str  # where the results are written
    # How the answers are asked for, not what they are: online and batch write the same records (a test
    # shows their paired difference is 0) into the same checkpoint, so switching mode mid-way reuses both.
    eval_mode: str = field(metadata=NOT_IN_KEY)
    batch_min_examples: int = field(metadata=NOT_IN_KEY)
    batch_pending_timeout: float = field(metadata=NOT_IN_KEY)
    batch_fallback_online: bool = field(metadata=NOT_IN_KEY)
    batch_online_below: int = field(metadata=NOT_IN_KEY)
    batch_poll_interval: float = field(metadata=NOT_IN_KEY)
    claim_stale_after: float = field(metadata=NOT_IN_KEY)
    lease_ttl_s: float = field(metadata=NOT_IN_KEY)
    cancel_job_on_interrupt: bool = field(metadata=NOT_IN_KEY)
    # Prices only change the report's cost line (sftflow.cost.prices; a tuned model is priced as its base model).
    base_model: str = field(metadata=NOT_IN_KEY)
    generation_prices_usd: dict[str, tuple[float, float]] = field(metadata=NOT_IN_KEY)
    work_dir: Path = field(metadata=NOT_IN_KEY)  # checkpoints, model cache
    concurrency: int = field(default=8, metadata=NOT_IN_KEY)
    rpm: float = field(default=300.0, metadata=NOT_IN_KEY)
    max_attempts: int = field(default=6, metadata=NOT_IN_KEY)
    max_error_rate: float = field(default=0.0, metadata=NOT_IN_KEY)  # fails or passes; never changes answers
    vertex_access_token: SecretStr | None = field(default=None, repr=False, metadata=NOT_IN_KEY)

    @classmethod
    def from_settings(cls, s: Settings) -> EvalSpec:
        names = {f.name for f in dataclasses.fields(cls)} - {"generation"}
        return cls(generation=generation_params(s), **{n: getattr(s, n) for n in names})

    @property
    def request_timeout(self) -> float:  # the name make_generator's Vertex client reads
        return self.generation.timeout_s

    def identity(self) -> dict[str, Any]:
        """Every field that changes an evaluation's answers (GenerationParams field by field), and the
        results format (sftflow.evaluation.results): a file of another format is recomputed, never served."""
        return {f.name: dataclasses.asdict(v) if f.name == "generation" else v
                for f in dataclasses.fields(self) if f.metadata.get("in_key", True)
                for v in [getattr(self, f.name)]} | {"results_format": results_format()}


def eval_identity(spec: EvalSpec, model: str, test_path: str, label: str) -> list:
    """The identity of one evaluation: the spec's, the model, the test set's content, the label."""
    return [spec.identity(), model, storage.fingerprint(test_path), label]


def resolve_model(s: Settings, model: str | None) -> str:
    """'base'/None → the base model; 'tuned' → the run's recorded tuned endpoint; else as given."""
    if model in (None, "", "base"):
        return s.base_model
    if model == "tuned":
        uri = layout.tuned_uri(s.run_root)
        tuned = TunedModel.read_if_exists(uri)
        if tuned is None:
            raise FileNotFoundError(f"{uri}: run '{s.run_name}' has no tuned model yet; run `sftflow tune`")
        return tuned.endpoint
    return model


def default_test_uri(s: Settings) -> str:
    """The test set prepare_data uploaded for this run, else the configured/default source."""
    if s.test_uri:
        return s.test_uri
    prepared = PreparedData.read_if_exists(layout.prepared_uri(s.run_root))
    return prepared.test if prepared else s.sources()["test"]


def evaluate_and_save(spec: EvalSpec, model: str, test_path: str, label: str, *,
                      on_progress: ProgressFn | None = None) -> Evaluation:
    """Answer and score the first `spec.samples` test examples; write the four outputs.

    Resumable: every scored example is in a local checkpoint named by the evaluation's identity,
    so a rerun after a crash asks the model only for what is missing. More than `max_error_rate`
    errored examples raise EvaluationFailed (one line per error kind, nothing written); fewer
    come back in `Evaluation.errors` (the caller must not cache such a result).
    """
    layout.check_name("label", label)
    out_dir = layout.eval_dir(spec.run_root, label)
    examples = read_test_csv(test_path, limit=spec.samples)
    ident = hashlib.sha256(json.dumps(eval_identity(spec, model, test_path, label), default=str,
                                      sort_keys=True).encode()).hexdigest()
    checkpoint = layout.checkpoint_uri(spec.run_root, spec.work_dir, label, ident)
    results, mode, batch = answer(spec, model, examples, checkpoint=checkpoint,
                                  batch_root=storage.join(out_dir, "batch", ident[:16]), on_progress=on_progress)
    price = prices.price_for(spec.base_model, spec.backend, spec.generation_prices_usd)
    cost = None if spec.backend != "vertex" else with_rates(evaluation_cost(  # billed on vertex only
        label, model, spec.base_model, results, price, batch=mode == "batch"), price)
    error_lines = check_error_rate(results, spec.max_error_rate, model)  # raises above the threshold
    summary = stats.summarize(results)
    counts = stats.counts(results)
    results_uri = storage.write_text(storage.join(out_dir, "results.jsonl"), results_to_jsonl(results),
                                     "application/jsonl")
    storage.write_text(storage.join(out_dir, "summary.json"),
                       json.dumps({"model": model, "label": label, "summary": summary, "counts": counts,
                                   "mode": mode, "batch": batch, "cost": cost}, indent=2),
                       "application/json")
    plot_uri = storage.write_bytes(storage.join(out_dir, "distribution.png"),
                                   plots.plot_single_distribution(results, label), "image/png")
    md = evaluation_markdown(summary, results, model)
    md += "\n\n" + "\n".join(f"- {line}" for line in mode_lines(mode, batch, cost))
    md += (f"\n\nResults: {links.file_link(results_uri, out_dir)}\n\n"
           f"{links.image(f'Score distribution of {label} ({model})', plot_uri, out_dir)}\n")  # relative: beside it
    report_uri = storage.write_text(storage.join(out_dir, "report.md"), md, "text/markdown")
    return Evaluation(label=label, model=model, results_uri=results_uri, report_uri=report_uri,
                      plot_uri=plot_uri, summary=summary, counts=counts, errors=tuple(error_lines), mode=mode,
                      batch=batch, cost=cost)


def answer(spec: EvalSpec, model: str, examples: Sequence[TestExample], *, checkpoint: str | Path, batch_root: str,
           on_progress: ProgressFn | None = None, generator: Generator | None = None,
           ) -> tuple[list[ExampleResult], str, dict[str, Any] | None]:
    """(results, mode, batch notes or None): every example answered and scored, online or through
    Vertex AI batch prediction (`choose_mode`), into the one checkpoint; batch's leftovers go online.
    Both modes give the same records, so what follows never asks which one ran."""
    mode = choose_mode(spec, len(examples))
    gen: list[Generator | None] = [generator]

    def online(todo: Sequence[TestExample]) -> list[ExampleResult]:
        if gen[0] is None:
            gen[0] = make_generator(spec, model)  # type: ignore[arg-type] - EvalSpec has the fields it reads
        offset = len(examples) - len(todo)  # after batch: progress still counts all examples
        progress = on_progress if not offset or on_progress is None else (
            lambda done, total, info: on_progress(done + offset, (total or 0) + offset, info))
        return evaluate(gen[0], todo, params=spec.generation, checkpoint=checkpoint, concurrency=spec.concurrency,
                        rpm=spec.rpm, max_attempts=spec.max_attempts, on_progress=progress, lease_ttl=spec.lease_ttl_s)

    if mode == "online":
        return online(examples), mode, None
    options = BatchOptions(root=batch_root, poll_interval=spec.batch_poll_interval,
                           pending_timeout=spec.batch_pending_timeout, fallback_online=spec.batch_fallback_online,
                           online_below=spec.batch_online_below, max_rounds=spec.max_attempts,
                           claim_stale_after=spec.claim_stale_after, cancel_on_interrupt=spec.cancel_job_on_interrupt,
                           lease_ttl=spec.lease_ttl_s)
    log.info("evaluating %s on %d examples with Vertex AI batch prediction (input under %s)", model,
             len(examples), batch_root)
    jobs = VertexBatchJobs(spec)  # type: ignore[arg-type] - EvalSpec has the connection fields it reads
    results, notes = evaluate_batch(jobs, examples, model=model, batch_model=jobs.model_for(model),
                                    params=spec.generation, checkpoint=checkpoint, options=options, online=online,
                                    on_progress=on_progress)
    batch = notes.to_dict()
    for line in batch_lines(batch):
        log.info(line)
    return results, mode, batch
