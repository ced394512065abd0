"""Google's own description of the Vertex AI API, as a validator the test servers call for every route.

google-api-python-client ships the discovery documents of Vertex AI
(`googleapiclient/discovery_cache/documents/aiplatform.v1beta1.json` and `aiplatform.v1.json`,
revision 20261106 with google-api-python-client 2.202.0; format:
https://developers.google.com/discovery/v1/reference/apis). They list every method (HTTP verb,
`flatPath`, query parameters) and every schema (field names, JSON types, formats, enums). This module
checks, for a method id such as `aiplatform.projects.locations.tuningJobs.create`:

- the path: `match(version, verb, path, ids)` finds which of `ids` the document says answers it (a
  method absent from that version's document, e.g. a `/v2/` path, matches nothing);
- the query: every name is one of the method's query parameters or a system parameter (`alt`,
  `$alt`, `fields`, ...), with its declared type;
- the body, recursively against the request schema, as Google's front end parses JSON into protos
  (https://protobuf.dev/programming-guides/json/): lowerCamelCase and the proto's snake_case names both
  accepted; unknown names, wrong JSON types and unknown enum values refused in Google's words; int64 as
  a number or a string; an enum as its name or its proto number (the numbers are not in the document:
  they come from google-cloud-aiplatform's protos). `request` returns the body with lowerCamelCase keys.
- the response, strictly: lowerCamelCase names only, int64 as strings, enums as names, no nulls.

What the document cannot say (ranges, per-model limits, label syntax) lives in vertex_schema.py.
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
from dataclasses import dataclass
from typing import Any

API = "type.googleapis.com/google.cloud.aiplatform"
#: System parameters every method takes (the document's top-level `parameters`); `$alt` is the
#: spelling google-cloud-aiplatform's REST transport sends (`$alt=json;enum-encoding=int`).
_SYSTEM_ALIASES = {"$alt": "alt"}
_INT = re.compile(r"-?\d+")
_NUMBER = re.compile(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|NaN|-?Infinity")
_DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)")
_DURATION = re.compile(r"-?\d+(\.\d{1,9})?s")
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")


def snake(name: str) -> str:
    """The proto field name of a lowerCamelCase JSON name."""
    return re.sub(r"(?<!^)([A-Z])", lambda m: "_" + m.group(1).lower(), name)


@functools.cache
def document(version: str) -> dict | None:
    """The discovery document of `version` ("v1", "v1beta1"), or None for a version Google does not publish."""
    import googleapiclient

    if version not in ("v1", "v1beta1"):
        return None
    path = os.path.join(os.path.dirname(googleapiclient.__file__), "discovery_cache", "documents",
                        f"aiplatform.{version}.json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@functools.cache
def methods(version: str) -> dict[str, dict]:
    """Every method of the version's document, by id."""
    out: dict[str, dict] = {}

    def walk(resources: dict) -> None:
        for res in resources.values():
            for m in res.get("methods", {}).values():
                out[m["id"]] = m
            walk(res.get("resources", {}))

    doc = document(version)
    if doc is not None:
        walk(doc.get("resources", {}))
    return out


@functools.cache
def _pattern(version: str, method_id: str) -> re.Pattern | None:
    m = methods(version).get(method_id)
    if m is None:
        return None
    parts = re.split(r"(\{[^}]+\})", m["flatPath"])
    return re.compile("/" + "".join(f"(?P<{p[1:-1]}>[^/:]+)" if p.startswith("{") else re.escape(p) for p in parts))


def match(verb: str, path: str, ids: list[str]) -> tuple[str, str, dict[str, str]] | None:
    """(version, method id, path values) of the first of `ids` whose HTTP verb and path template
    (in the document of the path's version) fit `path`; None when none does."""
    version = path.lstrip("/").split("/", 1)[0]
    if version == "ui":  # google-cloud-aiplatform's REST transport polls operations at /ui/{name}: v1's methods
        ids, version, path = [i for i in ids if ".operations." in i], "v1", "/v1" + path.lstrip("/")[2:]
    if document(version) is None:
        return None
    for method_id in ids:
        pattern = _pattern(version, method_id)
        if pattern is None or methods(version)[method_id]["httpMethod"] != verb:
            continue
        found = pattern.fullmatch(path)
        if found:
            return version, method_id, found.groupdict()
    return None


def method(version: str, method_id: str) -> dict:
    return methods(version)[method_id]


# ---------------------------------------------------------------------------- enums' proto numbers
_import_lock = threading.Lock()


@functools.cache
def _proto_enums() -> list[tuple[frozenset, str, dict[int, str]]]:
    """(member names, qualified name, {number: name}) of every enum in google-cloud-aiplatform's v1beta1 protos
    (the discovery document lists enum names in declaration order, not their numbers). One handler thread imports
    them at a time: two importing proto-plus modules at once broke its registry ("dictionary changed size")."""
    import proto

    with _import_lock:
        import google.cloud.aiplatform_v1beta1.types  # noqa: F401 - registers every enum

        subclasses = list(proto.Enum.__subclasses__())
    out, stack = [], subclasses
    while stack:
        cls = stack.pop()
        stack += cls.__subclasses__()
        if cls.__module__.startswith("google.cloud.aiplatform_v1beta1"):
            out.append((frozenset(cls.__members__), cls.__qualname__, {int(v): k for k, v in cls.__members__.items()}))
    return out


@functools.cache
def proto_enum(names: tuple[str, ...]) -> tuple[str, dict[int, str]] | None:
    """(qualified name, {number: name}) of the proto enum that shares the most members with a document's enum
    (the document and the protos may be a revision apart)."""
    wanted = set(names)
    best = max(_proto_enums(), key=lambda e: len(e[0] & wanted) - len(e[0] ^ wanted) / 1000, default=None)
    return (best[1], best[2]) if best is not None and len(best[0] & wanted) >= len(wanted) // 2 + 1 else None


def enum_number(names: list[str], number: int) -> str | None:
    """The enum value whose proto number is `number` (AdapterSize: ONE=1, TWO=6, FOUR=2, ...)."""
    found = proto_enum(tuple(names))
    name = found[1].get(number) if found else None
    return name if name in names else None


# ---------------------------------------------------------------------------- the walk
@dataclass
class _Walk:
    schemas: dict
    response: bool
    version: str
    problems: list[tuple[str, str]]

    def bad(self, path: str, text: str) -> None:
        self.problems.append((path, text))

    def value(self, spec: dict, value: Any, path: str, owner: str) -> Any:
        if value is None:
            if self.response:
                self.bad(path, f"null at '{path}' (a response omits unset fields)")
            return value
        if "$ref" in spec:
            return self.message(spec["$ref"], value, path)
        kind = spec.get("type")
        if kind == "any":
            return value
        if kind == "array":
            if not isinstance(value, list):
                if self.response:
                    self.bad(path, f"Invalid value at '{path}': expected a JSON array, got {_show(value)}")
                    return value
                value = [value]  # the proto3 JSON parser takes a lone value for a repeated field
            return [self.value(spec.get("items", {}), v, f"{path}[{i}]", owner) for i, v in enumerate(value)]
        if kind == "object":
            if not isinstance(value, dict):
                self.bad(path, f"Invalid value at '{path}' (map), {_show(value)}")
                return value
            if "properties" in spec:
                return self.fields(spec["properties"], value, path, owner)
            inner = spec.get("additionalProperties", {"type": "any"})
            return {k: self.value(inner, v, f"{path}[{k}]", owner) for k, v in value.items()}
        if "enum" in spec:
            return self.enum(spec["enum"], value, path, owner)
        if self.scalar(kind, spec.get("format"), value, path) and not self.response and (
                kind == "integer" or spec.get("format") in ("int64", "uint64")):
            return int(float(value)) if kind == "integer" else str(int(float(value)))  # as Google answers them
        return value

    def message(self, ref: str, value: Any, path: str) -> Any:
        schema = self.schemas[ref]
        if not isinstance(value, dict):
            name = ref.removeprefix(f"GoogleCloudAiplatform{self.version.capitalize()}")
            self.bad(path, f"Invalid value at '{path}' ({name}), {_show(value)}" if path else
                     f"Invalid JSON payload received. Expected an object, got {_show(value)}.")
            return value
        if "properties" not in schema:  # a google.protobuf.Struct-like message
            return value
        return self.fields(schema["properties"], value, path, ref)

    def fields(self, props: dict, value: dict, path: str, owner: str) -> dict:
        out = {}
        for key, item in value.items():
            name = key if key in props else None
            if name is None and not self.response:
                name = next((p for p in props if snake(p) == key), None)
            if name is None:
                at = f" at '{path}'" if path else ""
                self.bad(path, f'Invalid JSON payload received. Unknown name "{key}"{at}: Cannot find field.')
                continue
            child = f"{path}.{snake(name)}" if path else snake(name)
            out[name] = self.value(props[name], item, child, f"{owner}.{name}")
        return out

    def enum(self, names: list[str], value: Any, path: str, owner: str) -> Any:
        if isinstance(value, str) and value in names:
            return value
        if not self.response and isinstance(value, int) and not isinstance(value, bool):
            found = enum_number(names, value)
            if found is not None:
                return found
        found = proto_enum(tuple(names))
        schema, _, field = owner.rpartition(".")
        short = schema.removeprefix(f"GoogleCloudAiplatform{self.version.capitalize()}")
        type_name = found[0] if found else f"{short}.{field[:1].upper()}{field[1:]}"
        self.bad(path, f"Invalid value at '{path}' ({API}.{self.version}.{type_name}), {_show(value)}")
        return value

    def scalar(self, kind: str | None, fmt: str | None, value: Any, path: str) -> bool:
        if kind == "boolean":
            ok, proto = isinstance(value, bool), "TYPE_BOOL"
        elif kind == "integer" or fmt in ("int64", "uint64"):
            proto = {"int64": "TYPE_INT64", "uint64": "TYPE_UINT64", "uint32": "TYPE_UINT32"}.get(fmt, "TYPE_INT32")
            if self.response:  # Google's JSON: 64-bit integers as strings, 32-bit ones as numbers
                ok = (isinstance(value, str) and _INT.fullmatch(value) is not None) if kind == "string" else (
                    isinstance(value, int) and not isinstance(value, bool))
            else:
                ok = (isinstance(value, int) and not isinstance(value, bool)) or (
                    isinstance(value, float) and value.is_integer()) or (
                    isinstance(value, str) and _INT.fullmatch(value) is not None)
            if ok and fmt in ("uint64", "uint32") and int(float(value)) < 0:
                ok = False
        elif kind == "number":
            proto = "TYPE_DOUBLE" if fmt == "double" else "TYPE_FLOAT"
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool)) or (
                isinstance(value, str) and _NUMBER.fullmatch(value) is not None and not self.response)
        else:
            proto, ok = "TYPE_STRING", isinstance(value, str)
            if ok and fmt == "google-datetime":
                ok = _DATETIME.fullmatch(value) is not None
            elif ok and fmt == "google-duration":
                ok = _DURATION.fullmatch(value) is not None
            elif ok and fmt == "byte":
                ok = _BASE64.fullmatch(value) is not None
            if not ok and isinstance(value, str):
                proto = {"google-datetime": "google.protobuf.Timestamp", "google-duration": "google.protobuf.Duration",
                         "byte": "TYPE_BYTES"}.get(fmt or "", proto)
        if not ok:
            self.bad(path, f"Invalid value at '{path}' ({proto}), {_show(value)}")
        return ok


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (str, bool)) or value is None else (
        str(value) if isinstance(value, (int, float)) else type(value).__name__)


# ---------------------------------------------------------------------------- what the server calls
def request(version: str, method_id: str, query: dict[str, list[str]], body: Any) -> tuple[list[tuple[str, str]], Any]:
    """([(field, Google's description)] of what the method would refuse, the body with lowerCamelCase names)."""
    doc, m = document(version), method(version, method_id)
    problems: list[tuple[str, str]] = []
    params = {k: v for k, v in m.get("parameters", {}).items() if v.get("location") == "query"}
    system = doc.get("parameters", {})
    walk = _Walk(doc["schemas"], False, version, problems)
    for key, values in query.items():
        spec = params.get(key) or system.get(_SYSTEM_ALIASES.get(key, key))
        if spec is None:
            problems.append((key, f'Invalid JSON payload received. Unknown name "{key}": Cannot bind query parameter. '
                                  f"Field '{key}' could not be found in request message."))
            continue
        for v in values:
            if key in ("alt", "$alt"):  # `json;enum-encoding=int`: the format, then its options
                v = v.split(";", 1)[0]
            if spec.get("type") in ("integer", "boolean") and not (
                    _INT.fullmatch(v) if spec["type"] == "integer" else v in ("true", "false")):
                problems.append((key, f"Invalid value at '{snake(key)}' ({spec['type'].upper()}), \"{v}\""))
            elif "enum" in spec and v not in spec["enum"]:
                problems.append((key, f"Invalid value at '{snake(key)}', \"{v}\""))
    ref = m.get("request", {}).get("$ref")
    if ref is None:
        if body not in (None, {}):
            problems.append(("", "Invalid JSON payload received. This method takes no request body."))
        return problems, body
    return problems, walk.message(ref, {} if body is None else body, "")


def check(version: str, ref: str, value: Any) -> tuple[list[tuple[str, str]], Any]:
    """A value (e.g. a batch input line's request) against one schema of the document, as a request body."""
    problems: list[tuple[str, str]] = []
    return problems, _Walk(document(version)["schemas"], False, version, problems).message(ref, value, "")


def response(version: str, method_id: str, payload: Any) -> list[str]:
    """What in `payload` the method's response schema does not allow (empty: it conforms)."""
    doc, m = document(version), method(version, method_id)
    ref = m.get("response", {}).get("$ref")
    if ref is None:
        return [] if payload in (None, {}) else [f"{method_id} answers no body, got {_show(payload)}"]
    problems: list[tuple[str, str]] = []
    _Walk(doc["schemas"], True, version, problems).message(ref, payload, "")
    return [f"{method_id} ({ref}): {text}" for _, text in problems]
