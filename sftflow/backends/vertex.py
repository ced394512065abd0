"""The Vertex AI backend: Gemini generation and supervised tuning through google-genai.

Generation and tuning jobs go through google-genai; deleting a tuned model and its
endpoint goes through google-cloud-aiplatform's GAPIC clients (google-genai has no call for
it). Both honour `settings.vertex_base_url` (a test server on 127.0.0.1) and
`settings.vertex_access_token` (a static bearer token instead of application-default
credentials). The token is never logged and never put into an exception message.
SDK errors are translated into `TransientError` / `BackendError` (`vertex_client.call`), so retry
logic elsewhere never needs to know a Google exception class.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from typing import TYPE_CHECKING, Any

from google.genai import errors as genai_errors
from google.genai import types

from sftflow.backends import vertex_registry as registry
from sftflow.backends.base import Generation, GenerationParams, JobState, JobStatus, TuningSpec
from sftflow.backends.vertex_client import call, gapic_endpoint, make_genai_client, vertex_credentials
from sftflow.errors import BackendError

if TYPE_CHECKING:
    from google import genai

    from sftflow.config import Settings

log = logging.getLogger(__name__)

#: The label that ties a tuning job to its intent (see `sftflow.tuning.intent.tuning_key`).
KEY_LABEL = "sftflow-key"
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{1,63}$")
_BLOCK_REASONS = {"SAFETY", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
HARM_CATEGORIES = (
    types.HarmCategory.HARM_CATEGORY_HARASSMENT,
    types.HarmCategory.HARM_CATEGORY_HATE_SPEECH,
    types.HarmCategory.HARM_CATEGORY_SEXUALLY_EXPLICIT,
    types.HarmCategory.HARM_CATEGORY_DANGEROUS_CONTENT,
)
#: Vertex's job states (tuning and batch jobs share them) as ours.
STATES = {
    "JOB_STATE_UNSPECIFIED": JobState.PENDING,
    "JOB_STATE_QUEUED": JobState.PENDING,
    "JOB_STATE_PENDING": JobState.PENDING,
    "JOB_STATE_UPDATING": JobState.PENDING,
    "JOB_STATE_RUNNING": JobState.RUNNING,
    "JOB_STATE_SUCCEEDED": JobState.SUCCEEDED,
    "JOB_STATE_FAILED": JobState.FAILED,
    "JOB_STATE_CANCELLING": JobState.CANCELLING,
    "JOB_STATE_CANCELLED": JobState.CANCELLED,
    "JOB_STATE_PAUSED": JobState.PAUSED,
    "JOB_STATE_EXPIRED": JobState.EXPIRED,
    "JOB_STATE_PARTIALLY_SUCCEEDED": JobState.PARTIALLY_SUCCEEDED,
}
_ADAPTER_SIZES = {
    1: types.AdapterSize.ADAPTER_SIZE_ONE,
    2: types.AdapterSize.ADAPTER_SIZE_TWO,
    4: types.AdapterSize.ADAPTER_SIZE_FOUR,
    8: types.AdapterSize.ADAPTER_SIZE_EIGHT,
    16: types.AdapterSize.ADAPTER_SIZE_SIXTEEN,
}
# --------------------------------------------------------------------------- generation


class VertexGenerator:
    """Answers prompts with a Gemini base model or a tuned model's endpoint. Thread-safe."""

    def __init__(self, settings: Settings, model: str, client: genai.Client | None = None):
        self.model = model
        self._client = client or make_genai_client(settings)

    def generate(self, prompt: str, params: GenerationParams) -> Generation:
        threshold = types.HarmBlockThreshold(params.safety_threshold)
        config = types.GenerateContentConfig(
            temperature=params.temperature,
            max_output_tokens=params.max_output_tokens,
            safety_settings=[types.SafetySetting(category=c, threshold=threshold) for c in HARM_CATEGORIES],
            http_options=types.HttpOptions(timeout=int(params.timeout_s * 1000)),
        )
        start = time.perf_counter()
        response = call(
            f"generateContent on {self.model}",
            lambda: self._client.models.generate_content(model=self.model, contents=prompt, config=config),
        )
        return to_generation(response, time.perf_counter() - start)


def enum_name(value: Any) -> str | None:
    """An SDK enum's name, or the raw value when the SDK does not know it yet."""
    if value is None:
        return None
    return getattr(value, "name", None) or str(value)


def to_generation(response: types.GenerateContentResponse, latency_s: float | None) -> Generation:
    """A response as a Generation (online and batch answers go through here alike)."""
    usage = response.usage_metadata
    prompt_tokens = usage.prompt_token_count if usage else None
    # Thinking is billed as output tokens (https://cloud.google.com/vertex-ai/generative-ai/pricing).
    output_tokens = (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0) if usage else None

    def make(text: str, finish: str, blocked: bool = False) -> Generation:
        return Generation(text, finish, latency_s, prompt_tokens, output_tokens, blocked)

    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        return make("", "BLOCKED", blocked=True)
    if not response.candidates:
        return make("", "EMPTY")
    candidate = response.candidates[0]
    finish = enum_name(candidate.finish_reason) or "STOP"
    if finish in _BLOCK_REASONS:
        return make("", finish, blocked=True)
    parts = candidate.content.parts if candidate.content and candidate.content.parts else []
    text = "".join(p.text for p in parts if p.text and not p.thought)
    if not text.strip():
        return make("", "EMPTY")
    return make(text, finish)


# --------------------------------------------------------------------------- tuning


_unknown_states_logged: set[str] = set()


def job_state(name: str | None, job_name: str | None, kind: str = "tuning job") -> JobState:
    """A job's state from its Vertex state name; one the API added after this code was written counts
    as still running, logged once per state name (polling goes on until a known end state or the
    time budget)."""
    name = name or "JOB_STATE_UNSPECIFIED"
    state = STATES.get(name)
    if state is None:
        if name not in _unknown_states_logged:
            _unknown_states_logged.add(name)
            log.warning("%s %s: unknown state %s from the API; treating it as still running", kind, job_name, name)
        return JobState.RUNNING
    return state


def _check_label(value: str) -> str:
    if not _LABEL_VALUE.match(value):
        raise ValueError(
            f"tuning key {value!r} is not a valid GCP label value "
            "(1-63 characters: lowercase letters, digits, '_' and '-')"
        )
    return value


class VertexTuner:
    """Supervised tuning jobs on Vertex AI, labelled with their intent key."""

    def __init__(self, settings: Settings, client: genai.Client | None = None):
        self.settings = settings
        self._client = client or make_genai_client(settings, timeout_s=60.0)

    # -- jobs -------------------------------------------------------------------------
    def submit(self, spec: TuningSpec) -> str:
        if spec.adapter_size not in _ADAPTER_SIZES:
            raise ValueError(f"adapter_size: expected one of {sorted(_ADAPTER_SIZES)}, got {spec.adapter_size}")
        config = types.CreateTuningJobConfig(
            epoch_count=spec.epochs,
            adapter_size=_ADAPTER_SIZES[spec.adapter_size],
            learning_rate_multiplier=spec.learning_rate_multiplier,
            tuned_model_display_name=spec.display_name,
            validation_dataset=types.TuningValidationDataset(gcs_uri=spec.val_uri) if spec.val_uri else None,
            labels={KEY_LABEL: _check_label(spec.key)},
        )

        def tune():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", genai_errors.ExperimentalWarning)
                return self._client.tunings.tune(
                    base_model=spec.base_model,
                    training_dataset=types.TuningDataset(gcs_uri=spec.train_uri),
                    config=config,
                )

        job = call(f"creating a tuning job for {spec.base_model} on {spec.train_uri}", tune)
        log.info("submitted tuning job %s (key %s)", job.name, spec.key)
        return job.name

    def get(self, name: str) -> JobStatus:
        return self._status(call(f"reading tuning job {name}", lambda: self._client.tunings.get(name=name)))

    def cancel(self, name: str) -> None:
        call(f"cancelling tuning job {name}", lambda: self._client.tunings.cancel(name=name))
        log.info("cancel requested for tuning job %s", name)

    def find(self, key: str) -> list[JobStatus]:
        """Jobs labelled `key`, newest first. Filters on the server and again here."""
        _check_label(key)

        def listed(filter_: str | None) -> list[types.TuningJob]:
            config = {"filter": filter_} if filter_ else None
            return list(self._client.tunings.list(config=config))

        try:
            jobs = call(f"listing tuning jobs labelled {key}", lambda: listed(f'labels.{KEY_LABEL}="{key}"'))
        except BackendError as exc:  # a filter syntax the service rejects: list all, filter here
            if getattr(exc.__cause__, "code", None) != 400:
                raise
            log.warning("label filter rejected (%s); listing all tuning jobs", exc)
            jobs = call("listing tuning jobs", lambda: listed(None))
        found = [self._status(j) for j in jobs if (j.labels or {}).get(KEY_LABEL) == key]
        return sorted(found, key=lambda s: s.create_time or "", reverse=True)

    def _status(self, job: types.TuningJob) -> JobStatus:
        state = job_state(enum_name(job.state), job.name)
        stats: dict[str, Any] = {}
        total_steps = None
        sup = job.tuning_data_stats.supervised_tuning_data_stats if job.tuning_data_stats else None
        if sup is not None:
            stats = {
                k: v
                for k, v in {
                    "billable_tokens": sup.total_billable_token_count,
                    "billable_characters": sup.total_billable_character_count,
                    "example_count": sup.tuning_dataset_example_count,
                    "step_count": sup.tuning_step_count,
                    # what Vertex did not train on as given: truncated (1-based indices, a partial sample) or dropped
                    "truncated_examples": sup.total_truncated_example_count,
                    "truncated_indices": [int(i) for i in sup.truncated_example_indices or []] or None,
                    "dropped_reasons": list(sup.dropped_example_reasons or []) or None,
                }.items()
                if v is not None
            }
            total_steps = sup.tuning_step_count
        if job.experiment:
            stats["experiment"] = job.experiment
        job_id = job.name.rsplit("/", 1)[-1]
        return JobStatus(
            name=job.name,
            state=state,
            key=(job.labels or {}).get(KEY_LABEL),
            progress=1.0 if state is JobState.SUCCEEDED else None,
            total_steps=total_steps,
            tuned_model=job.tuned_model.model if job.tuned_model else None,
            endpoint=job.tuned_model.endpoint if job.tuned_model else None,
            error=job.error.message if job.error and job.error.message else None,
            create_time=job.create_time.isoformat() if job.create_time else None,
            update_time=job.update_time.isoformat() if job.update_time else None,
            stats=stats,
            checkpoints=registry.checkpoints(job),
            console_url=(
                "https://console.cloud.google.com/vertex-ai/generative/language/locations/"
                f"{self.settings.region}/tuning/tuningJob/{job_id}?project={self.settings.project}"
            ),
        )

    def mark_champion(self, status: JobStatus, checkpoint_id: str | None = None,
                      previous: JobStatus | None = None) -> str | None:
        """The Model Registry version alias `champion` on the job's tuned model, after making `checkpoint_id` (a
        checkpoint champion) its default checkpoint (see vertex_registry); then the alias comes off `previous`,
        the replaced champion's model (each tuned model is its own registry model, so nothing moves it)."""
        if not status.tuned_model:
            return None
        models = self._gapic("ModelServiceClient")
        if checkpoint_id is not None:
            call(f"making checkpoint {checkpoint_id} the default of {status.tuned_model}",
                 lambda: registry.set_default_checkpoint(models, status.tuned_model, checkpoint_id))
        marked = call(f"setting alias {registry.CHAMPION_ALIAS} on {status.tuned_model}",
                      lambda: registry.set_alias(models, status.tuned_model, registry.CHAMPION_ALIAS))
        old = previous.tuned_model if previous is not None else None
        if old and registry.model_id(old) != registry.model_id(status.tuned_model):
            try:
                call(f"removing alias {registry.CHAMPION_ALIAS} from {old}",
                     lambda: registry.remove_alias(models, old, registry.CHAMPION_ALIAS))
            except BackendError as exc:
                if getattr(exc.__cause__, "code", None) != 404:
                    raise
                log.warning("the replaced champion's model %s no longer exists: no alias to remove", old)
        return marked

    # -- cleanup ----------------------------------------------------------------------
    @staticmethod
    def _undeploy_all_and_delete(endpoints, ep) -> None:
        """Undeploy every model of `ep` (the traffic moved to the ones left, as undeployModel requires), then
        delete it."""
        deployed = [d.id for d in ep.deployed_models]
        for i, did in enumerate(deployed):
            rest = deployed[i + 1 :]
            split = {d: 100 // len(rest) + (1 if j < 100 % len(rest) else 0) for j, d in enumerate(rest)}
            call(
                f"undeploying {did} from {ep.name}",
                lambda did=did, split=split: endpoints.undeploy_model(
                    endpoint=ep.name, deployed_model_id=did, traffic_split=split
                ).result(timeout=600),
            )
        call(f"deleting {ep.name}", lambda: endpoints.delete_endpoint(name=ep.name).result(timeout=600))
        log.info("deleted endpoint %s", ep.name)

    def _gapic(self, service: str):
        from google.api_core.client_options import ClientOptions
        from google.cloud import aiplatform_v1

        endpoint = gapic_endpoint(self.settings)
        cls = getattr(aiplatform_v1, service)
        return call(
            f"creating the {service}",
            lambda: cls(
                credentials=vertex_credentials(self.settings),
                transport="rest",
                client_options=ClientOptions(api_endpoint=endpoint),
            ),
        )

    def outputs_exist(self, status: JobStatus) -> bool:
        """GET the job's endpoint and model: False as soon as one is gone (404), or if it names none."""
        import google.api_core.exceptions as gexc

        checks = [(service, method, name) for service, method, name in (
            ("EndpointServiceClient", "get_endpoint", status.endpoint),
            ("ModelServiceClient", "get_model", status.tuned_model),
        ) if name]
        for service, method, name in checks:
            client = self._gapic(service)
            try:
                call(f"reading {name}", lambda: getattr(client, method)(name=name))
            except BackendError as exc:
                if isinstance(exc.__cause__, gexc.NotFound):
                    return False
                raise
        return bool(checks)

    def delete_outputs(self, status: JobStatus, dry_run: bool = True) -> list[str]:
        """Undeploy and delete the job's endpoint and its checkpoints' endpoints, then delete its model;
        returns their names. (A model still deployed anywhere cannot be deleted, and a checkpoint endpoint
        left behind would keep serving, and billing.)

        Resources that no longer exist are skipped, so running it twice is harmless.
        With dry_run nothing changes: the names that would be deleted are returned.
        """
        import google.api_core.exceptions as gexc

        names: list[str] = []
        endpoints = self._gapic("EndpointServiceClient") if status.endpoint else None
        for endpoint in dict.fromkeys([c.get("endpoint") for c in status.checkpoints] + [status.endpoint]):
            if not endpoint:
                continue
            try:
                ep = call(f"reading endpoint {endpoint}", lambda name=endpoint: endpoints.get_endpoint(name=name))
            except BackendError as exc:
                if not isinstance(exc.__cause__, gexc.NotFound):
                    raise
                continue
            names.append(ep.name)
            if not dry_run:
                self._undeploy_all_and_delete(endpoints, ep)
        if status.tuned_model:
            model_name = status.tuned_model.split("@", 1)[0]
            models = self._gapic("ModelServiceClient")
            try:
                call(f"reading model {status.tuned_model}", lambda: models.get_model(name=status.tuned_model))
            except BackendError as exc:
                if not isinstance(exc.__cause__, gexc.NotFound):
                    raise
            else:
                names.append(model_name)
                if not dry_run:
                    call(f"deleting {model_name}", lambda: models.delete_model(name=model_name).result(timeout=600))
                    log.info("deleted model %s", model_name)
        return names
