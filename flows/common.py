"""Turning flow parameters into Settings: explicit parameters win over `config`, which wins over env."""

from __future__ import annotations

import json
from typing import Any

from sftflow import credentials, storage
from sftflow.config import Settings, load_settings


def settings_for(config: dict[str, Any] | None = None, **params: Any) -> Settings:
    merged = dict(config or {})
    merged.update({k: v for k, v in params.items() if v is not None})
    settings = load_settings(**merged)
    credentials.use_token(settings.vertex_access_token)  # Cloud Storage calls use it too
    return settings


def read_record(uri: str) -> dict | None:
    """A JSON record an earlier step wrote (prepared.json, tuned.json), or None if there is none."""
    return json.loads(storage.read_text(uri)) if storage.exists(uri) else None
