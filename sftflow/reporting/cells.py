"""Formatting shared by the reports: table cells, numbers, ROUGE points, p-values."""

from __future__ import annotations

import math

TEXT_LIMIT = 240


def cell(text: str | None, limit: int = TEXT_LIMIT) -> str:
    """One markdown table cell: single line, pipes escaped, long text cut with an ellipsis."""
    s = " ".join((text or "").split())
    if len(s) > limit:
        s = s[: limit - 1].rstrip() + "…"
    return s.replace("\\", "\\\\").replace("|", "\\|") or "*(empty)*"


def num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def pts(x: float) -> str:
    """A difference in ROUGE points (×100), signed; n/a for NaN."""
    return "n/a" if math.isnan(x) else f"{100 * x:+.1f}"


def p_value(p: float | None) -> str:
    return "n/a" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")
