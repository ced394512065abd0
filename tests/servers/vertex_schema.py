"""What Vertex refuses that its API description cannot say: per-model limits, label syntax, name lengths.

Field names, JSON types and enum values are checked against Google's discovery documents
(tests/servers/discovery.py). The rules here are the semantic ones, each with its source:

- supervised tuning per base model (adapter sizes, training-token limit per example, validation-set size):
  https://cloud.google.com/vertex-ai/generative-ai/docs/models/gemini-use-supervised-tuning and
  https://cloud.google.com/vertex-ai/generative-ai/docs/models/tune-text-models-supervised ("Adapter size:
  Supported values are 1, 2, 4, 8, and 16" for 2.5 Flash / Flash-Lite; 2.5 Pro and the 2.0 models stop at 8:
  decided, the page lists a smaller set for the larger and older models);
- Gemini tuning takes `epochCount` and `learningRateMultiplier`, never `learningRate` / `batchSize` (those
  are the open-model tuning knobs): https://cloud.google.com/vertex-ai/generative-ai/docs/models/gemini-use-supervised-tuning#tuning_hyperparameters ;
- maxOutputTokens per model (2.5 models 65,536; 2.0 models 8,192):
  https://cloud.google.com/vertex-ai/generative-ai/docs/models/gemini/2-5-flash (and each model's page);
- thinkingBudget per model (2.5 Pro 128..32,768 and never 0; 2.5 Flash 0..24,576; 2.5 Flash-Lite 0 or
  512..24,576; -1 = dynamic; 2.0 models cannot think): https://cloud.google.com/vertex-ai/generative-ai/docs/thinking ;
- labels: https://cloud.google.com/resource-manager/docs/labels-overview#requirements (keys 1-63 characters
  starting with a lowercase letter, values 0-63; lowercase letters, digits, '_' and '-', international
  characters allowed; at most 64 labels), as the TuningJob schema's own description repeats;
- display names at most 128 characters: https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.models#Model
  ("The display name of the Model. The name can be up to 128 characters long");
- the epoch range (1..100) is not published: decided, so that `epochCount: 100000` is refused.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from tests.servers.discovery import snake  # noqa: F401 - the proto name of a JSON name, for the server's messages


@dataclass(frozen=True)
class ModelLimits:
    adapter_sizes: tuple[int, ...]
    max_output_tokens: int
    thinking: tuple[int, int] | None  # (low, high) budget; None: the model cannot think
    thinking_off: bool  # thinkingBudget 0 allowed
    max_example_tokens: int = 131_072


MODELS: dict[str, ModelLimits] = {
    "gemini-2.5-flash": ModelLimits((1, 2, 4, 8, 16), 65_536, (1, 24_576), True),
    "gemini-2.5-flash-lite": ModelLimits((1, 2, 4, 8, 16), 65_536, (512, 24_576), True),
    "gemini-2.5-pro": ModelLimits((1, 2, 4, 8), 65_536, (128, 32_768), False),
    "gemini-2.0-flash": ModelLimits((1, 2, 4, 8), 8_192, None, True),
    "gemini-2.0-flash-001": ModelLimits((1, 2, 4, 8), 8_192, None, True),
    "gemini-2.0-flash-lite": ModelLimits((1, 2, 4, 8), 8_192, None, True),
    "gemini-2.0-flash-lite-001": ModelLimits((1, 2, 4, 8), 8_192, None, True),
}
DEFAULT_LIMITS = MODELS["gemini-2.5-flash"]
#: AdapterSize names → adapter size (the proto numbers them differently: ONE=1, TWO=6, FOUR=2, ...;
#: discovery.enum_number maps a number to its name first).
ADAPTER_SIZES = {"ADAPTER_SIZE_ONE": 1, "ADAPTER_SIZE_TWO": 2, "ADAPTER_SIZE_FOUR": 4, "ADAPTER_SIZE_EIGHT": 8,
                 "ADAPTER_SIZE_SIXTEEN": 16, "ADAPTER_SIZE_THIRTY_TWO": 32}
EPOCHS = (1, 100)
DISPLAY_NAME_MAX = 128
MAX_LABELS = 64
VALIDATION_EXAMPLES_MAX = 5000


def limits(model: str) -> ModelLimits:
    return MODELS.get(model, DEFAULT_LIMITS)


def field(obj: dict | None, name: str, default: Any = None) -> Any:
    """obj[name] under its camelCase or snake_case spelling (requests are stored camelCase)."""
    if not obj:
        return default
    camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)
    for key in (camel, name):
        if key in obj:
            return obj[key]
    return default


def out_of_range(name: str, value: float, low: str, high: str) -> str:
    """Vertex's wording for a parameter outside its range (e.g. https://github.com/continuedev/continue/issues/7849)."""
    shown = int(value) if float(value).is_integer() else value
    return (f"Unable to submit request because it has a {name} value of {shown} but the supported range is "
            f"from {low} to {high}. Update the value and try again.")


def _label_char(c: str) -> bool:
    """Lowercase letters, digits, '_', '-' and international characters (letters without case)."""
    return c in "_-" or c.isdigit() or c.islower() or unicodedata.category(c) == "Lo"


def label_problems(labels: dict[str, Any], where: str = "labels") -> list[tuple[str, str]]:
    out = []
    if len(labels) > MAX_LABELS:
        out.append((where, f"At most {MAX_LABELS} labels can be set, got {len(labels)}."))
    for key, value in labels.items():
        if not (1 <= len(key) <= 63 and (key[0].islower() or unicodedata.category(key[0]) == "Lo")
                and all(_label_char(c) for c in key)):
            out.append((f"{where}[{key}]", f"Label key {key!r} violates the format constraint: keys are 1-63 "
                                            "lowercase letters, digits, '_' or '-', starting with a lowercase letter."))
        elif not (isinstance(value, str) and len(value) <= 63 and all(_label_char(c) for c in value)):
            out.append((f"{where}[{key}]", f"Label value {value!r} of key {key!r} violates the format constraint: "
                                            "values are 0-63 lowercase letters, digits, '_' or '-'."))
    return out
