"""The one way a test may skip: loudly outside CI, never in CI (issue: no silent skips)."""

from __future__ import annotations

import os
import warnings

import pytest

#: Every check skipped in this session; conftest prints them in the terminal summary.
NOT_CHECKED: list[str] = []


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_loudly(what: str, how: str) -> None:
    """Skip outside CI saying what was not checked and how to enable it; in CI, fail instead."""
    message = f"NOT CHECKED: {what}. To check it: {how}"
    if in_ci():
        pytest.fail(f"{message} (CI must check it)")
    NOT_CHECKED.append(message)
    warnings.warn(message, stacklevel=2)
    pytest.skip(message)
