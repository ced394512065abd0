"""Turning flow parameters into Settings: explicit parameters win over `config`, which wins over env."""

from __future__ import annotations

from typing import Any

from sftflow.config import Settings, load_settings


def settings_for(config: dict[str, Any] | None = None, **params: Any) -> Settings:
    merged = dict(config or {})
    merged.update({k: v for k, v in params.items() if v is not None})
    return load_settings(**merged)
