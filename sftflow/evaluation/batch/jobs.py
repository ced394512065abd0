"""Batch prediction jobs through google-genai `client.batches`, shaped as a `Tuner` for `ensure_job`.

One job per intent: the intent's key is in the job's display name (batch jobs take no labels:
`CreateBatchJobConfig` has none), so `find(key)` lists jobs by display name. Handing this class to
`sftflow.tuning.intent.ensure_job` with `Claims` gives batch jobs the tuning jobs' guarantees: a rerun
attaches, and two processes at once submit one job between them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from google.genai import types

from sftflow.backends.base import JobStatus
from sftflow.backends.vertex import enum_name, job_state
from sftflow.backends.vertex_client import call, gapic_endpoint, make_genai_client, vertex_credentials
from sftflow.errors import BackendError

if TYPE_CHECKING:
    from google import genai

    from sftflow.config import Settings

log = logging.getLogger(__name__)

DISPLAY_PREFIX = "sftflow-eval-"


def display_name(key: str) -> str:
    return f"{DISPLAY_PREFIX}{key}"


@dataclass(frozen=True)
class BatchSpec:
    """One batch job to submit: `key` names the intent (see `sftflow.evaluation.batch.run.batch_key`)."""

    key: str
    model: str  # publisher model name or tuned model resource name
    input_uri: str
    output_prefix: str


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


class VertexBatchJobs:
    """create / get / list / cancel of Vertex batch prediction jobs, errors translated."""

    def __init__(self, settings: Settings, client: genai.Client | None = None):
        """`settings`: Settings, or any object with its connection fields (EvalSpec has them)."""
        self.settings = settings
        self._client = client or make_genai_client(settings, timeout_s=60.0)

    def submit(self, spec: BatchSpec) -> str:
        config = types.CreateBatchJobConfig(display_name=display_name(spec.key), dest=spec.output_prefix)
        job = call(f"creating a batch prediction job for {spec.model} on {spec.input_uri}",
                    lambda: self._client.batches.create(model=spec.model, src=spec.input_uri, config=config))
        log.info("submitted batch prediction job %s (key %s)", job.name, spec.key)
        return job.name

    def get(self, name: str) -> JobStatus:
        return self._status(call(f"reading batch prediction job {name}", lambda: self._client.batches.get(name=name)))

    def cancel(self, name: str) -> None:
        call(f"cancelling batch prediction job {name}", lambda: self._client.batches.cancel(name=name))
        log.info("cancel requested for batch prediction job %s", name)

    def find(self, key: str) -> list[JobStatus]:
        """Jobs whose display name carries `key`, newest first (filtered on the server and here)."""
        wanted = display_name(key)

        def listed(filter_: str | None) -> list[types.BatchJob]:
            return list(self._client.batches.list(config={"filter": filter_} if filter_ else None))

        try:
            jobs = call(f"listing batch jobs named {wanted}", lambda: listed(f'display_name="{wanted}"'))
        except BackendError as exc:  # a filter the service rejects: list all, filter here
            if getattr(exc.__cause__, "code", None) != 400:
                raise
            jobs = call("listing batch jobs", lambda: listed(None))
        found = [self._status(j) for j in jobs if j.display_name == wanted]
        return sorted(found, key=lambda s: s.create_time or "", reverse=True)

    def model_for(self, model: str) -> str:
        """What a batch job runs for `model`: a publisher model as is; a tuned model's endpoint → the
        model resource deployed there with the most traffic (batch prediction takes models, not endpoints)."""
        if "/endpoints/" not in model:
            return model
        from google.api_core.client_options import ClientOptions
        from google.cloud import aiplatform_v1

        api = gapic_endpoint(self.settings)
        client = aiplatform_v1.EndpointServiceClient(credentials=vertex_credentials(self.settings), transport="rest",
                                                     client_options=ClientOptions(api_endpoint=api))
        ep = call(f"reading endpoint {model}", lambda: client.get_endpoint(name=model))
        traffic = dict(ep.traffic_split)
        deployed = sorted(ep.deployed_models, key=lambda d: -traffic.get(d.id, 0))
        if not deployed:
            raise BackendError(f"{model}: no model is deployed there, so there is nothing to run a batch job on")
        return deployed[0].model

    def outputs_exist(self, status: JobStatus) -> bool:
        """A finished batch job's predictions stay in the bucket: it is always reusable."""
        return True

    def _status(self, job: types.BatchJob) -> JobStatus:
        name = enum_name(job.state) or "JOB_STATE_UNSPECIFIED"
        state = job_state(name, job.name, "batch job")
        cs = job.completion_stats
        stats: dict[str, Any] = {"vertex_state": name.removeprefix("JOB_STATE_")}
        if cs is not None:
            stats.update(succeeded=_int(cs.successful_count), failed=_int(cs.failed_count),
                         incomplete=_int(cs.incomplete_count))
        out_dir = job.output_info.gcs_output_directory if job.output_info else None
        if out_dir:
            stats["output_dir"] = out_dir
        display = job.display_name or ""
        job_id = (job.name or "").rsplit("/", 1)[-1]
        return JobStatus(
            name=job.name or "",
            state=state,
            key=display.removeprefix(DISPLAY_PREFIX) if display.startswith(DISPLAY_PREFIX) else None,
            error=job.error.message if job.error and job.error.message else None,
            create_time=job.create_time.isoformat() if job.create_time else None,
            update_time=job.update_time.isoformat() if job.update_time else None,
            stats=stats,
            console_url=(f"https://console.cloud.google.com/vertex-ai/locations/{self.settings.region}/"
                         f"batch-predictions/{job_id}?project={self.settings.project}"),
        )
