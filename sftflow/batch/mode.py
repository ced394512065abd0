"""Which mode an evaluation runs in (`eval_mode`), and running it: the one place that decides.

auto: batch on the vertex backend when there are at least `batch_min_examples` examples and a
bucket (Vertex reads batch input from Cloud Storage); online otherwise, and always on local.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sftflow.backends.base import GenerationParams
from sftflow.data.testset import TestExample
from sftflow.evaluation import ExampleResult, evaluate

if TYPE_CHECKING:
    from sftflow.config import Settings

log = logging.getLogger(__name__)


def choose_mode(settings: Settings, n_examples: int) -> str:
    """"batch" or "online" for `n_examples` examples under `settings.eval_mode`."""
    from sftflow.config import ConfigError

    mode = settings.eval_mode
    if settings.backend != "vertex":
        if mode == "batch":
            log.warning("eval_mode=batch: the %s backend has no batch prediction; evaluating online",
                        settings.backend)
        return "online"
    if mode == "online":
        return "online"
    in_bucket = settings.storage_root.startswith("gs://")
    if mode == "batch":
        if not in_bucket:
            raise ConfigError("bucket: required for eval_mode=batch — Vertex AI batch prediction reads its input "
                              "from Cloud Storage (set SFTFLOW_BUCKET or --bucket, or use --mode online)")
        return "batch"
    return "batch" if in_bucket and n_examples >= settings.batch_min_examples else "online"


def batch_model_for(settings: Settings, model: str) -> str:
    """What a batch job runs for `model`: a publisher model as is; a tuned model's endpoint → the
    model resource deployed there with the most traffic (batch prediction takes models, not endpoints)."""
    if "/endpoints/" not in model:
        return model
    from google.api_core.client_options import ClientOptions
    from google.cloud import aiplatform_v1

    from sftflow.backends.vertex import _call, _credentials

    endpoint = settings.vertex_base_url or f"{settings.region}-aiplatform.googleapis.com"
    client = aiplatform_v1.EndpointServiceClient(credentials=_credentials(settings), transport="rest",
                                                 client_options=ClientOptions(api_endpoint=endpoint))
    ep = _call(f"reading endpoint {model}", lambda: client.get_endpoint(name=model))
    traffic = dict(ep.traffic_split)
    deployed = sorted(ep.deployed_models, key=lambda d: -traffic.get(d.id, 0))
    if not deployed:
        from sftflow.backends.base import BackendError

        raise BackendError(f"{model}: no model is deployed there, so there is nothing to run a batch job on")
    return deployed[0].model


def run_evaluation(settings: Settings, model: str, examples: Sequence[TestExample], *, params: GenerationParams,
                   checkpoint: Path, batch_root: str, on_progress: Callable[..., None] | None = None,
                   generator=None) -> tuple[list[ExampleResult], str, dict[str, Any] | None]:
    """(results, mode, batch notes or None): the examples evaluated in the mode `choose_mode` picks."""
    from sftflow.backends import make_generator

    mode = choose_mode(settings, len(examples))
    gen_holder: list[Any] = [generator]

    def online(todo: Sequence[TestExample]) -> list[ExampleResult]:
        if gen_holder[0] is None:
            gen_holder[0] = make_generator(settings, model)
        offset = len(examples) - len(todo)  # after batch: progress still counts all examples
        progress = on_progress if not offset or on_progress is None else (
            lambda done, total, info: on_progress(done + offset, total + offset, info))
        return evaluate(gen_holder[0], todo, params=params, checkpoint=checkpoint, concurrency=settings.concurrency,
                        rpm=settings.rpm, max_attempts=settings.max_attempts, on_progress=progress)

    if mode == "online":
        return online(examples), mode, None
    from sftflow.batch.jobs import VertexBatchJobs
    from sftflow.batch.run import BatchOptions, evaluate_batch

    options = BatchOptions(root=batch_root, poll_interval=settings.batch_poll_interval,
                           pending_timeout=settings.batch_pending_timeout,
                           fallback_online=settings.batch_fallback_online, online_below=settings.batch_online_below,
                           max_rounds=settings.max_attempts, claim_stale_after=settings.claim_stale_after,
                           cancel_on_interrupt=settings.cancel_job_on_interrupt)
    log.info("evaluating %s on %d examples with Vertex AI batch prediction (input under %s)", model,
             len(examples), batch_root)
    results, notes = evaluate_batch(VertexBatchJobs(settings), examples, model=model,
                                    batch_model=batch_model_for(settings, model), params=params,
                                    checkpoint=checkpoint, options=options, online=online, on_progress=on_progress)
    for line in notes.lines():
        log.info(line)
    return results, mode, notes.to_dict()


def mode_notes(settings: Settings, results: Sequence[ExampleResult], mode: str,
               batch: dict[str, Any] | None) -> tuple[dict[str, Any] | None, list[str]]:
    """(cost figures or None, report lines): the mode, what batch did, and — on vertex, where it is
    billed — the generation cost at the rate paid next to the other mode's."""
    from sftflow.batch.cost import cost_line, generation_cost
    from sftflow.batch.run import BatchNotes

    lines = [f"Mode: {mode}", *(BatchNotes(**batch).lines() if batch else [])]
    if settings.backend != "vertex":
        return None, lines
    cost = generation_cost(results, mode=mode, price_in=settings.price_per_million_input_tokens,
                           price_out=settings.price_per_million_output_tokens, discount=settings.batch_discount)
    return cost, [*lines, cost_line(cost)]
