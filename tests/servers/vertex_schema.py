"""Request checks of the Vertex-shaped test server: field names, enums and ranges, as Vertex refuses them.

Google's front end parses a request's JSON into the API's protos: a name the proto lacks is
refused ("Invalid JSON payload received. Unknown name ..."), and so is an enum value it does not
know; both the lowerCamelCase JSON name and the original snake_case proto name are accepted (the
proto3 JSON mapping, https://protobuf.dev/programming-guides/json/ ; Vertex's own REST samples send
`generation_config` / `safety_settings`). Range checks use Vertex's wording, e.g.
https://github.com/continuedev/continue/issues/7849 ; unknown-name errors e.g.
https://github.com/lingarr-translate/lingarr/issues/188 .

The schema lists the fields the SDKs send and their close neighbours, not the whole API; an
`ANY` field is accepted without a look inside.
"""

from __future__ import annotations

import re
from typing import Any

ANY = object()


class Enum:
    def __init__(self, type_name: str, *values: str):
        self.type_name, self.values = type_name, values


class Repeated:
    def __init__(self, item: Any):
        self.item = item


class MapOf:
    def __init__(self, value: Any):
        self.value = value


_API = "type.googleapis.com/google.cloud.aiplatform.v1beta1"

HARM_CATEGORIES = (
    "HARM_CATEGORY_UNSPECIFIED", "HARM_CATEGORY_HATE_SPEECH", "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_HARASSMENT", "HARM_CATEGORY_SEXUALLY_EXPLICIT", "HARM_CATEGORY_CIVIC_INTEGRITY",
    "HARM_CATEGORY_IMAGE_HATE", "HARM_CATEGORY_IMAGE_DANGEROUS_CONTENT", "HARM_CATEGORY_IMAGE_HARASSMENT",
    "HARM_CATEGORY_IMAGE_SEXUALLY_EXPLICIT", "HARM_CATEGORY_JAILBREAK",
)
HARM_THRESHOLDS = (
    "HARM_BLOCK_THRESHOLD_UNSPECIFIED", "BLOCK_LOW_AND_ABOVE", "BLOCK_MEDIUM_AND_ABOVE", "BLOCK_ONLY_HIGH",
    "BLOCK_NONE", "OFF",
)
ADAPTER_SIZES = (
    "ADAPTER_SIZE_UNSPECIFIED", "ADAPTER_SIZE_ONE", "ADAPTER_SIZE_TWO", "ADAPTER_SIZE_FOUR", "ADAPTER_SIZE_EIGHT",
    "ADAPTER_SIZE_SIXTEEN", "ADAPTER_SIZE_THIRTY_TWO",
)

SCHEMA: dict[str, dict[str, Any]] = {
    "GenerateContentRequest": {
        "contents": Repeated("Content"), "system_instruction": "Content", "cached_content": str,
        "tools": Repeated(ANY), "tool_config": ANY, "labels": MapOf(str),
        "safety_settings": Repeated("SafetySetting"), "model_armor_config": ANY,
        "generation_config": "GenerationConfig",
    },
    "CountTokensRequest": {
        "model": str, "instances": Repeated(ANY), "contents": Repeated("Content"), "system_instruction": "Content",
        "tools": Repeated(ANY), "generation_config": "GenerationConfig",
    },
    "Content": {"role": str, "parts": Repeated("Part")},
    "Part": {
        "text": str, "thought": bool, "thought_signature": str, "inline_data": ANY, "file_data": ANY,
        "function_call": ANY, "function_response": ANY, "executable_code": ANY, "code_execution_result": ANY,
        "video_metadata": ANY,
    },
    "SafetySetting": {
        "category": Enum("SafetySetting.HarmCategory", *HARM_CATEGORIES),
        "threshold": Enum("SafetySetting.HarmBlockThreshold", *HARM_THRESHOLDS),
        "method": Enum("SafetySetting.HarmBlockMethod", "HARM_BLOCK_METHOD_UNSPECIFIED", "SEVERITY", "PROBABILITY"),
    },
    "GenerationConfig": {
        "temperature": float, "top_p": float, "top_k": float, "candidate_count": int, "max_output_tokens": int,
        "stop_sequences": Repeated(str), "response_logprobs": bool, "logprobs": int, "presence_penalty": float,
        "frequency_penalty": float, "seed": int, "response_mime_type": str, "response_schema": ANY,
        "response_json_schema": ANY, "routing_config": ANY, "audio_timestamp": bool,
        "response_modalities": Repeated(ANY), "media_resolution": ANY, "speech_config": ANY,
        "thinking_config": "ThinkingConfig", "model_config": ANY, "image_config": ANY,
        "enable_affective_dialog": bool,
    },
    "ThinkingConfig": {"include_thoughts": bool, "thinking_budget": int, "thinking_level": ANY},
    "TuningJob": {
        "base_model": str, "pre_tuned_model": ANY, "supervised_tuning_spec": "SupervisedTuningSpec",
        "preference_optimization_spec": ANY, "distillation_spec": ANY, "name": str,
        "tuned_model_display_name": str, "description": str, "labels": MapOf(str), "encryption_spec": ANY,
        "service_account": str, "experiment": str, "output_uri": str, "evaluation_config": ANY,
    },
    "SupervisedTuningSpec": {
        "training_dataset_uri": str, "validation_dataset_uri": str, "hyper_parameters": "HyperParameters",
        "export_last_checkpoint_only": bool, "evaluation_config": ANY, "tuning_mode": ANY,
    },
    "HyperParameters": {
        "epoch_count": int, "learning_rate_multiplier": float, "learning_rate": float,
        "adapter_size": Enum("SupervisedHyperParameters.AdapterSize", *ADAPTER_SIZES), "batch_size": int,
    },
    "UndeployModelRequest": {"deployed_model_id": str, "traffic_split": MapOf(int)},
    "MergeVersionAliasesRequest": {"name": str, "version_aliases": Repeated(str)},
    # models.patch's body (the fields google-genai's `models.update` sends, and their neighbours)
    "Model": {"name": str, "display_name": str, "description": str, "version_description": str,
              "default_checkpoint_id": str, "labels": MapOf(str)},
}

_SCALAR_TYPES = {str: "TYPE_STRING", int: "TYPE_INT64", float: "TYPE_FLOAT", bool: "TYPE_BOOL"}


def snake(name: str) -> str:
    """The proto field name for a JSON key (lowerCamelCase or already snake_case)."""
    return re.sub(r"(?<!^)([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def problems(value: Any, message: str) -> list[tuple[str, str]]:
    """[(field path, description)] for every name, enum or type the API would refuse in `value`."""
    out: list[tuple[str, str]] = []
    _walk(value, message, "", out)
    return out


def _at(path: str) -> str:
    return f" at '{path}'" if path else ""


def _walk(value: Any, kind: Any, path: str, out: list[tuple[str, str]]) -> None:
    if kind is ANY or value is None:
        return
    if isinstance(kind, str):  # a message
        if not isinstance(value, dict):
            out.append((path, f"Invalid JSON payload received. Expected an object{_at(path)}."))
            return
        fields = SCHEMA[kind]
        for key, item in value.items():
            name = snake(key)
            if name not in fields:
                out.append((path, f'Invalid JSON payload received. Unknown name "{key}"{_at(path)}: Cannot find field.'))
                continue
            _walk(item, fields[name], f"{path}.{name}" if path else name, out)
    elif isinstance(kind, Repeated):
        if not isinstance(value, list):
            # The proto3 JSON parser of Google's front end takes a lone object for a repeated
            # field as a one-element list (Vertex's docs send `"contents": {...}` that way).
            value = [value]
        for i, item in enumerate(value):
            _walk(item, kind.item, f"{path}[{i}]", out)
    elif isinstance(kind, MapOf):
        if not isinstance(value, dict):
            out.append((path, f"Invalid JSON payload received. Expected an object{_at(path)}."))
            return
        for k, item in value.items():
            _walk(item, kind.value, f"{path}[{k}]", out)
    elif isinstance(kind, Enum):
        ok = value in kind.values or (isinstance(value, int) and not isinstance(value, bool)
                                      and 0 <= value < len(kind.values))
        if not ok:
            out.append((path, f"Invalid value at '{path}' ({_API}.{kind.type_name}), {_json(value)}"))
    elif not _scalar_ok(value, kind):
        out.append((path, f"Invalid value at '{path}' ({_SCALAR_TYPES[kind]}), {_json(value)}"))


def _scalar_ok(value: Any, kind: type) -> bool:
    if kind is str:
        return isinstance(value, str)
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind is int:  # int64 travels as a JSON string; int32 as a number; both are accepted
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer()) or (
            isinstance(value, str) and re.fullmatch(r"-?\d+", value) is not None)
    if kind is float:
        return isinstance(value, (int, float)) or value in ("NaN", "Infinity", "-Infinity")
    return True


def _json(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)


def field(obj: dict | None, name: str, default: Any = None) -> Any:
    """obj[name] under its camelCase or snake_case spelling (both are accepted by the API)."""
    if not obj:
        return default
    camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)
    for key in (camel, name):
        if key in obj:
            return obj[key]
    return default


def out_of_range(name: str, value: float, low: str, high: str) -> str:
    """Vertex's wording for a parameter outside its range."""
    shown = int(value) if float(value).is_integer() else value
    return (f"Unable to submit request because it has a {name} value of {shown} but the supported range is "
            f"from {low} to {high}. Update the value and try again.")
