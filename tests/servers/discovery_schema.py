"""Check a JSON request body against a schema of a Google API discovery document.

google-api-python-client ships Google's published API descriptions (discovery documents) in
`googleapiclient/discovery_cache/documents/` (e.g. `run.v2.json`, `aiplatform.v1.json`): the same
documents its `discovery.build` clients send requests with. Each names its schemas under "schemas";
a schema is an object with "properties" (and/or "additionalProperties" for maps), each property a
JSON type ("string", "integer", "number", "boolean", "array", "object", "any") or a "$ref" to
another schema; strings may have an "enum" or a "format" (https://developers.google.com/discovery/v1/type-format).

`validate` walks a body recursively and returns one line per problem: a field name the schema does not
have, a value of the wrong JSON type, an enum value the API does not list, a malformed duration.
Google's front end parses JSON into protos the same way (proto3 JSON mapping,
https://protobuf.dev/programming-guides/json/): it accepts a field's lowerCamelCase name or its
original snake_case name, `null` for "not set", and 64-bit integers as numbers or decimal strings.

    errors = validate(load("run.v2"), "GoogleCloudRunV2Job", body)   # [] when the body is well formed
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

_DURATION = re.compile(r"^-?\d+(\.\d{1,9})?s$")
_INT64 = ("int64", "uint64")


def documents_dir() -> Path:
    import googleapiclient

    return Path(googleapiclient.__file__).parent / "discovery_cache" / "documents"


@cache
def load(name: str) -> dict:
    """The discovery document `name` (e.g. "run.v2", "aiplatform.v1") as google-api-python-client ships it."""
    return json.loads((documents_dir() / f"{name}.json").read_text(encoding="utf-8"))


def validate(doc: dict, schema_name: str, body: Any) -> list[str]:
    """Problems of `body` as a `schema_name` of `doc` (a loaded discovery document); [] when none.
    Each line starts with the field's path, e.g. `template.template.containers[0].resources.limit: unknown field`."""
    if schema_name not in doc.get("schemas", {}):
        raise KeyError(f"{doc.get('id', '?')}: no schema {schema_name!r}")
    errors: list[str] = []
    _check(doc, {"$ref": schema_name}, body, "", errors)
    return errors


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}.get(
        type(value), type(value).__name__)


def _check(doc: dict, spec: dict, value: Any, path: str, errors: list[str]) -> None:
    where = path or "(body)"
    if "$ref" in spec:
        spec = {**doc["schemas"][spec["$ref"]], "id": spec["$ref"]}
    if value is None:  # proto3 JSON: null means the field is not set
        return
    kind = spec.get("type")
    if kind == "any":
        return
    if kind == "object":
        if not isinstance(value, dict):
            errors.append(f"{where}: expected an object ({spec.get('id', 'map')}), got {_kind(value)} {value!r:.60}")
            return
        props, extra = spec.get("properties", {}), spec.get("additionalProperties")
        for key, item in value.items():
            sub = f"{path}.{key}" if path else key
            if key in props or _camel(key) in props:
                _check(doc, props.get(key) or props[_camel(key)], item, sub, errors)
            elif extra is not None:
                _check(doc, extra, item, sub, errors)
            else:
                errors.append(f"{sub}: unknown field (not in {spec.get('id', 'this object')})")
        return
    if kind == "array":
        if not isinstance(value, list):
            errors.append(f"{where}: expected an array, got {_kind(value)} {value!r:.60}")
            return
        for i, item in enumerate(value):
            _check(doc, spec.get("items", {"type": "any"}), item, f"{path}[{i}]", errors)
        return
    _check_scalar(spec, value, where, errors)


def _check_scalar(spec: dict, value: Any, where: str, errors: list[str]) -> None:
    kind, fmt = spec.get("type"), spec.get("format")
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind == "string":
        if fmt in _INT64 and (is_int or (isinstance(value, str) and re.fullmatch(r"-?\d+", value))):
            return
        if not isinstance(value, str):
            errors.append(f"{where}: expected a string{f' ({fmt})' if fmt else ''}, got {_kind(value)} {value!r:.60}")
        elif "enum" in spec and value not in spec["enum"]:
            errors.append(f"{where}: {value!r} is not one of {', '.join(spec['enum'])}")
        elif fmt == "google-duration" and not _DURATION.match(value):
            errors.append(f"{where}: {value!r} is not a duration (seconds with an 's', e.g. '3600s')")
    elif kind == "integer":
        if not is_int and not (fmt in _INT64 and isinstance(value, str) and re.fullmatch(r"-?\d+", value)):
            errors.append(f"{where}: expected an integer, got {_kind(value)} {value!r:.60}")
    elif kind == "number":
        if not (is_int or isinstance(value, float)):
            errors.append(f"{where}: expected a number, got {_kind(value)} {value!r:.60}")
    elif kind == "boolean":
        if not isinstance(value, bool):
            errors.append(f"{where}: expected a boolean, got {_kind(value)} {value!r:.60}")
    else:
        errors.append(f"{where}: the schema has no type I know ({spec!r:.80})")
