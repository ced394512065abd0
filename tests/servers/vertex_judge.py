"""The Gen AI evaluation service's `evaluateInstances` (pairwise summarization quality) for the Vertex test server.

`POST /v1beta1/projects/{p}/locations/{l}:evaluateInstances` with a `pairwiseSummarizationQualityInput`
body, checked against Google's API description (the `aiplatform.v1beta1` discovery document shipped in
google-api-python-client): with tests/servers/discovery.py where it exists (the strict server), else by
`check_schema` below, a small recursive walk of the same document: unknown field names, wrong JSON types,
unknown enum values and missing "Required." instance fields are a 400 INVALID_ARGUMENT naming the field.

The fake autorater is deterministic: the better answer is the one sharing more words with the reference
(or, without one, with the article), unless `prefer(instance) -> "CANDIDATE" | "BASELINE" | "TIE"` says
otherwise. `position_bias` is the share of requests in which it answers for whichever answer the
autorater's template shows first (`baselinePrediction`: "Response A" in Google's pairwise templates),
whatever their quality; which requests are biased is a hash of the request, so it does not depend on the
order requests arrive in. Faults are the server's (`fault_rate`, `add_prompt_fault` matching the article).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable
from typing import Any

PATH = re.compile(r"/v1beta1/projects/([^/]+)/locations/([^/:]+):evaluateInstances")
METHOD_ID = "aiplatform.projects.locations.evaluateInstances"
REQUEST = "GoogleCloudAiplatformV1beta1EvaluateInstancesRequest"
REQUIRED = ("instruction", "context", "prediction", "baselinePrediction")  # "Required." in the instance's schema
_WORD = re.compile(r"\w+")


def _document() -> dict:
    import os

    import googleapiclient

    path = os.path.join(os.path.dirname(googleapiclient.__file__), "discovery_cache", "documents",
                        "aiplatform.v1beta1.json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


_DOC: dict | None = None


def schemas() -> dict:
    global _DOC
    if _DOC is None:
        _DOC = _document()
    return _DOC["schemas"]


def _camel(name: str) -> str:
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)


_TYPES = {"string": (str,), "boolean": (bool,), "object": (dict,), "array": (list,)}


def check_schema(ref: str, value: Any, path: str = "") -> list[tuple[str, str]]:
    """Problems of `value` against schema `ref` of the discovery document: (field path, description)."""
    spec = schemas()[ref]
    if not isinstance(value, dict):
        return [(path or ref, f"Invalid value at '{path}', expected an object")]
    problems: list[tuple[str, str]] = []
    props = spec.get("properties", {})
    for key, v in value.items():
        name = key if key in props else _camel(key)
        where = f"{path}.{name if name in props else key}" if path else (name if name in props else key)
        if name not in props:
            problems.append((where, f'Invalid JSON payload received. Unknown name "{key}" at \'{path}\': '
                                    "Cannot find field."))
            continue
        problems += _check_value(props[name], v, where)
    for name, p in props.items():  # "Required." fields of an instance (output-only ones are never required)
        if (p.get("description") or "").startswith("Required.") and name not in value and _snake(name) not in value \
                and ref.endswith("Instance"):
            where = f"{path}.{name}" if path else name
            problems.append((where, f"{where}: Required field is not set."))
    return problems


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def _check_value(p: dict, v: Any, where: str) -> list[tuple[str, str]]:
    if "$ref" in p:
        return check_schema(p["$ref"], v, where)
    kind = p.get("type")
    if kind == "array":
        if not isinstance(v, list):
            return [(where, f"Invalid value at '{where}', expected a list")]
        return [x for item in v for x in _check_value(p.get("items", {}), item, where)]
    if kind in ("integer", "number"):
        ok = (isinstance(v, (int, float)) and not isinstance(v, bool)) or (isinstance(v, str) and _num(v))
        if kind == "integer" and isinstance(v, float) and not v.is_integer():
            ok = False
        return [] if ok else [(where, f"Invalid value at '{where}' ({kind}), {json.dumps(v)}")]
    if kind in _TYPES and not isinstance(v, _TYPES[kind]):
        return [(where, f"Invalid value at '{where}' ({kind}), {json.dumps(v)}")]
    if "enum" in p and v not in p["enum"]:
        return [(where, f"Invalid value at '{where}', {json.dumps(v)} is not one of {p['enum']}")]
    return []


def _num(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def validate(query: dict[str, list[str]], body: Any) -> tuple[list[tuple[str, str]], dict]:
    """(problems, body with lowerCamelCase keys): the strict server's validator when it is there, else ours."""
    try:
        from tests.servers import discovery  # the strict server's validator (branch strict-server)
    except ImportError:
        discovery = None
    if discovery is not None:
        return discovery.request("v1beta1", METHOD_ID, query, body)
    problems = check_schema(REQUEST, body)
    return problems, _camelized(body)


def _camelized(value: Any) -> Any:
    if isinstance(value, dict):
        return {_camel(k): _camelized(v) for k, v in value.items()}
    return value


def overlap(answer: str, target: str) -> float:
    """Word-overlap F1 of an answer with a target text (the fake autorater's notion of quality)."""
    a, t = set(_WORD.findall(answer.lower())), set(_WORD.findall(target.lower()))
    if not a or not t:
        return 0.0
    common = len(a & t)
    return 0.0 if not common else 2 * common / (len(a) + len(t))


class Judging:
    """The evaluateInstances route and its knobs; `server.judging` on a VertexTestServer."""

    def __init__(self, server: Any, *, position_bias: float = 0.0, seed: int = 0):
        self.server = server
        self.position_bias = position_bias
        self.seed = seed
        self.prefer: Callable[[dict], str] | None = None
        self.asked: list[dict] = []  # every valid instance judged: {instance, choice, biased}
        self._lock = threading.Lock()

    def count(self) -> int:
        with self._lock:
            return len(self.asked)

    def _biased(self, instance: dict) -> bool:
        blob = json.dumps([self.seed, instance], sort_keys=True).encode()
        u = int.from_bytes(hashlib.sha256(blob).digest()[:8], "big") / 2 ** 64
        return u < self.position_bias

    def _quality_choice(self, inst: dict) -> str:
        if self.prefer is not None:
            return self.prefer(inst)
        target = inst.get("reference") or inst["context"]
        p, b = overlap(inst["prediction"], target), overlap(inst["baselinePrediction"], target)
        return "TIE" if abs(p - b) < 1e-9 else "CANDIDATE" if p > b else "BASELINE"

    def route(self, parent: str, *, query: dict[str, list[str]], body: Any) -> dict:
        """The server's route (`extra_routes`): the server has matched the path and checked the body against the
        discovery document; here: one metric input, the instance's Required fields, the location, the answer."""
        from tests.servers.vertex_server import _invalid

        problems, body = validate(query, body)
        inst = ((body or {}).get("pairwiseSummarizationQualityInput") or {}).get("instance") or {}
        problems += [(f"pairwiseSummarizationQualityInput.instance.{name}", f"instance.{name}: Required field is not "
                      "set.") for name in REQUIRED if name not in inst]
        if problems:
            raise _invalid(problems)
        return self._judge(parent, body)

    def evaluate(self, path: str, *, query: dict[str, list[str]], body: Any) -> dict:
        m = PATH.fullmatch(path)
        return self.route(f"projects/{m.group(1)}/locations/{m.group(2)}", query=query, body=body)

    def _judge(self, parent: str, body: dict) -> dict:
        from tests.servers.vertex_server import _invalid
        given = [k for k in body if k.endswith("Input")]
        if given != ["pairwiseSummarizationQualityInput"]:
            raise _invalid([("metric_inputs", f"exactly one metric input is served here, got {given}")])
        if body.get("location") not in (None, parent):
            raise _invalid([("location", "must match the URL's location")])
        config = body.get("autoraterConfig") or {}
        count = int(config.get("samplingCount", 4))
        if not 1 <= count <= 32:
            raise _invalid([("autorater_config.sampling_count", "samplingCount: minimum 1, maximum 32")])
        inst = body["pairwiseSummarizationQualityInput"]["instance"]
        self.server._prompt_fault(inst.get("context", ""))
        biased = self._biased(inst)
        choice = "BASELINE" if biased else self._quality_choice(inst)
        why = ("Response A reads better (shown first)" if biased else
               {"CANDIDATE": "the candidate covers more of the reference",
                "BASELINE": "the baseline covers more of the reference", "TIE": "both cover the reference equally"}[choice])
        with self._lock:
            self.asked.append({"instance": inst, "choice": choice, "biased": biased, "config": config})
        return {"pairwiseSummarizationQualityResult": {"pairwiseChoice": choice, "explanation": why,
                                                       "confidence": 0.5 if biased else 0.9}}
