"""The Vertex judge: the Gen AI evaluation service's pairwise summarization quality autorater.

`POST https://{region}-aiplatform.googleapis.com/v1beta1/projects/{p}/locations/{region}:evaluateInstances`
through google-cloud-aiplatform's `EvaluationServiceClient` (REST transport, api_endpoint = the setting
`vertex_base_url` or the regional endpoint, credentials from sftflow.infra.credentials: the same
connection as every other Vertex call). Field names and enums are the API description's
(`aiplatform.v1beta1` discovery document: `GoogleCloudAiplatformV1beta1EvaluateInstancesRequest`,
`...PairwiseSummarizationQualityInput/Instance/Spec`, `...AutoraterConfig`,
`...PairwiseSummarizationQualityResult`); `request_body` builds the JSON and the SDK parses it, so a
misspelt name fails here, before any request.

Both orders are asked by sftflow (sftflow.judging.pairs), each in its own request with `flipEnabled: false`:
the service's own flip (`flipEnabled`, default true) swaps the answers "for half of the samples" and
returns one aggregated choice, which hides a position preference instead of showing it; asking both
orders ourselves lets a win count only when both agree and lets the report say how often they did not.

The service reports no token usage, so a request's tokens are estimated: characters / 4 of everything
sent plus `TEMPLATE_TOKENS` for the autorater's prompt template, × `samplingCount`; output: the
explanation's characters / 4 × `samplingCount`. Priced at the judge model's list price (sftflow.cost.prices;
the evaluation service's default judge is gemini-2.0-flash per
https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/evaluation).
"""

from __future__ import annotations

import json
from typing import Any

from sftflow.backends.vertex_client import call, vertex_credentials
from sftflow.errors import BackendError
from sftflow.judging.pairs import JudgeAnswer, PairInstance

METHOD = "evaluateInstances"
METRIC_INPUT = "pairwiseSummarizationQualityInput"
METRIC_RESULT = "pairwiseSummarizationQualityResult"
DEFAULT_JUDGE_MODEL = "gemini-2.0-flash"  # what the service uses when autoraterModel is unset (see the docstring)
TEMPLATE_TOKENS = 600  # estimated length of the autorater's prompt template (not published; an estimate)
SAMPLING_COUNT = 1  # autorater samples per request (the API's default is 4; each one is billed)


def label(judge_model: str | None) -> str:
    return f"Vertex AI pairwise summarization quality autorater ({judge_model or DEFAULT_JUDGE_MODEL})"


def autorater_model(judge_model: str | None, project: str | None, region: str) -> str | None:
    """`autoraterModel` as the API wants it: a full publisher-model or endpoint name (a bare name is expanded)."""
    if not judge_model:
        return None
    if judge_model.startswith("projects/"):
        return judge_model
    name = judge_model.removeprefix("publishers/google/models/")
    return f"projects/{project}/locations/{region}/publishers/google/models/{name}"


def request_body(instance: PairInstance, *, judge_model: str | None = None, sampling_count: int = SAMPLING_COUNT
                 ) -> dict[str, Any]:
    """The evaluateInstances body (lowerCamelCase, as the discovery document names the fields)."""
    inst = {"instruction": instance.instruction, "context": instance.context, "prediction": instance.prediction,
            "baselinePrediction": instance.baseline_prediction}
    if instance.reference:
        inst["reference"] = instance.reference
    config: dict[str, Any] = {"flipEnabled": False, "samplingCount": sampling_count}
    if judge_model:
        config["autoraterModel"] = judge_model
    return {METRIC_INPUT: {"metricSpec": {"useReference": bool(instance.reference)}, "instance": inst},
            "autoraterConfig": config}


def estimated_tokens(instance: PairInstance, explanation: str, sampling_count: int) -> tuple[int, int]:
    sent = sum(len(x or "") for x in (instance.instruction, instance.context, instance.prediction,
                                      instance.baseline_prediction, instance.reference))
    return (sent // 4 + TEMPLATE_TOKENS) * sampling_count, max(1, len(explanation) // 4) * sampling_count


class VertexJudge:
    """See the module docstring. One client per judge, shared by the judging threads."""

    name = "vertex-pairwise-summarization-quality"

    def __init__(self, spec: Any):  # a sftflow.judging.step.JudgeSpec (project, region, judge_model, connection)
        if not spec.project:
            raise BackendError("project: required for the vertex judge (set SFTFLOW_PROJECT or --project)")
        self.spec = spec
        self.label = label(spec.judge_model)
        self.model = autorater_model(spec.judge_model, spec.project, spec.region)
        self.location = f"projects/{spec.project}/locations/{spec.region}"
        self._client = None

    def identity(self) -> dict[str, Any]:
        return {"judge": self.name, "autorater_model": self.model, "sampling_count": SAMPLING_COUNT,
                "flip_enabled": False, "project": self.spec.project, "region": self.spec.region,
                "vertex_base_url": self.spec.vertex_base_url}

    def client(self):
        if self._client is None:
            from google.api_core.client_options import ClientOptions
            from google.cloud import aiplatform_v1beta1

            endpoint = self.spec.vertex_base_url or f"{self.spec.region}-aiplatform.googleapis.com"
            self._client = call("creating the EvaluationServiceClient", lambda: aiplatform_v1beta1.EvaluationServiceClient(
                credentials=vertex_credentials(self.spec), transport="rest",  # type: ignore[arg-type]
                client_options=ClientOptions(api_endpoint=endpoint)))
        return self._client

    def judge(self, instance: PairInstance) -> JudgeAnswer:
        from google.cloud import aiplatform_v1beta1

        body = request_body(instance, judge_model=self.model) | {"location": self.location}
        request = aiplatform_v1beta1.EvaluateInstancesRequest.from_json(json.dumps(body))
        client = self.client()
        response = call(f"judging with {self.location}:{METHOD}", lambda: client.evaluate_instances(
            request=request, retry=None, timeout=self.spec.request_timeout))
        result = response.pairwise_summarization_quality_result
        choice = aiplatform_v1beta1.PairwiseChoice(result.pairwise_choice).name
        explanation = result.explanation or ""
        tokens_in, tokens_out = estimated_tokens(instance, explanation, SAMPLING_COUNT)
        return JudgeAnswer(choice=choice, explanation=explanation, confidence=float(result.confidence),
                           input_tokens=tokens_in, output_tokens=tokens_out)
