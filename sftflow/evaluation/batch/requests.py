"""Batch request lines and prediction lines: each request carries its example's id, each answer finds it.

Vertex writes predictions in any order and with no id field of its own (python-aiplatform#1166,
#2621), but it echoes every request as it was sent, `labels` included, beside its `response` (or
a non-empty `status` when the row failed): https://cloud.google.com/vertex-ai/generative-ai/docs/multimodal/batch-prediction-from-cloud-storage .
LiteLLM matches Vertex batch rows the same way, by a request label
(https://github.com/BerriAI/litellm/pull/25627). Label values must be GCP label values
(lowercase letters, digits, `_`, `-`, at most 63), so an id that is not one travels as a hash of
itself; a row that comes back without labels is matched by a hash of its prompt text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from google.genai import types

from sftflow.backends.base import Generation, GenerationParams
from sftflow.backends.vertex import HARM_CATEGORIES, to_generation
from sftflow.data.testset import TestExample

log = logging.getLogger(__name__)

#: The request label that carries an example's id through a batch job.
ID_LABEL = "sftflow-id"
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{1,63}$")


def id_label(example_id: str) -> str:
    """The id itself when it is a valid label value, else "h" + 40 hex chars of its SHA-256."""
    if _LABEL_VALUE.match(example_id):
        return example_id
    return "h" + hashlib.sha256(example_id.encode()).hexdigest()[:40]


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()


def request_line(prompt: str, params: GenerationParams, label: str) -> dict:
    """One input line: the generateContent body the online path sends (same contents, safety
    settings and generationConfig as VertexGenerator), plus the id label."""
    return {"request": {
        "contents": [{"role": "user", "parts": [{"text": prompt}]}],
        "safetySettings": [{"category": c.value, "threshold": params.safety_threshold} for c in HARM_CATEGORIES],
        "generationConfig": {"temperature": params.temperature, "maxOutputTokens": params.max_output_tokens},
        "labels": {ID_LABEL: label},
    }}


def requests_jsonl(examples: Sequence[TestExample], params: GenerationParams,
                   prompt_of: Callable[[TestExample], str]) -> str:
    """The input file for `examples`, one line each, in their order. Raises ValueError when two
    ids share a label (two ids that differ only in case would)."""
    seen: dict[str, str] = {}
    lines = []
    for ex in examples:
        label = id_label(ex.id)
        if label in seen:
            raise ValueError(f"example ids {seen[label]!r} and {ex.id!r} map to the same batch label {label!r}")
        seen[label] = ex.id
        lines.append(json.dumps(request_line(prompt_of(ex), params, label), ensure_ascii=False))
    return "".join(line + "\n" for line in lines)


def ids_of(text: str) -> list[str]:
    """The id labels of an input file, in order (a rerun reads its round back from it)."""
    return [json.loads(raw)["request"]["labels"][ID_LABEL] for raw in text.splitlines() if raw.strip()]


@dataclass(frozen=True)
class Prediction:
    """One output row: the example's id and its answer, or the row's failure `status`."""

    id: str
    generation: Generation | None
    status: str | None = None


def _prompt_of(request: dict) -> str:
    texts = [p.get("text", "") for c in request.get("contents") or [] for p in (c.get("parts") or [])
             if isinstance(p, dict) and not p.get("thought")]
    return "\n".join(texts)


def parse_predictions(text: str, by_label: dict[str, str], by_hash: dict[str, str],
                      source: str = "<predictions>") -> tuple[list[Prediction], int]:
    """Predictions of known examples in `text` (any order), and how many lines matched none.

    `by_label` maps id label → example id, `by_hash` prompt hash → example id (the fallback).
    A line that is not JSON is logged with its line number and counted as unmatched.
    """
    out: list[Prediction] = []
    unmatched = 0
    for i, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
            request = row.get("request") or {}
        except (ValueError, AttributeError) as exc:
            log.warning("%s:%d: not a prediction line (%s); ignored", source, i, exc)
            unmatched += 1
            continue
        label = (request.get("labels") or {}).get(ID_LABEL)
        ex_id = by_label.get(label) if label else None
        if ex_id is None:
            ex_id = by_hash.get(prompt_hash(_prompt_of(request)))
        if ex_id is None:
            unmatched += 1
            continue
        status = row.get("status") or ""
        response = row.get("response")
        if status or not isinstance(response, dict):
            out.append(Prediction(ex_id, None, status or "no response in the prediction row"))
            continue
        parsed = types.GenerateContentResponse.model_validate(response)
        out.append(Prediction(ex_id, to_generation(parsed, None)))
    return out, unmatched
