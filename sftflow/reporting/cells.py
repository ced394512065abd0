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


#: The one unit of every ROUGE number a report shows: points, the F-measure × 100 (0–100). The data files
#: (results.jsonl, summary.json, comparison.json, report.json) keep F-measures (0–1) and say so.
ROUGE_UNIT = "ROUGE points (F-measure × 100, 0–100)"


def points(x: float | None, digits: int = 2) -> str:
    """A ROUGE score (an F-measure, 0–1) in ROUGE points (0–100); n/a for None or NaN."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}"


def pts(x: float | None, digits: int = 1) -> str:
    """A difference of F-measures in ROUGE points (×100), signed; n/a for None or NaN."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:+.{digits}f}"


def p_value(p: float | None) -> str:
    return "n/a" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")
