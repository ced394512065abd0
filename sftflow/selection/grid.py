"""A hyperparameter grid from comma lists: each point is one tuning intent with a stable label.

`--epochs 1,2 --adapter-size 4,8` makes four configurations. Each value is checked against the
limits Vertex accepts for Gemini supervised tuning (adapter sizes 1, 2, 4, 8, 16:
https://cloud.google.com/vertex-ai/generative-ai/docs/models/gemini-use-supervised-tuning) and
the same bounds as the single-job settings, before anything is read or submitted.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from sftflow.cost.estimate import CostCapExceeded, CostEstimate, GridEstimate, usd
from sftflow.errors import SftflowError

ADAPTER_SIZES = (1, 2, 4, 8, 16)
MAX_EPOCHS = 100
MAX_LR_MULTIPLIER = 100.0
MAX_GRID = 64  # more configurations than this is almost surely a typo (and a large bill)


class GridError(SftflowError, ValueError):
    """A grid value that cannot be tuned; the message names the flag and the value."""


@dataclass(frozen=True)
class GridPoint:
    """One configuration of the grid (the hyperparameters of one tuning job)."""

    epochs: int
    adapter_size: int
    learning_rate_multiplier: float

    @property
    def label(self) -> str:
        """A result label safe as a path segment: e2-a8-lr0p5 (see sftflow.infra.layout.NAME_PATTERN)."""
        lr = f"{self.learning_rate_multiplier:g}".replace(".", "p").replace("-", "m").replace("+", "")
        return f"e{self.epochs}-a{self.adapter_size}-lr{lr}"

    def hyperparameters(self) -> dict:
        return asdict(self)


def _items(flag: str, value: str | Iterable) -> list[str]:
    parts = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    parts = [p.strip() for p in parts]
    if not parts or any(p == "" for p in parts):
        raise GridError(f"{flag}: {value!r}: empty value in the list; use e.g. {flag} 1,2")
    return parts


def parse_epochs(value: str | Iterable) -> list[int]:
    out = []
    for p in _items("--epochs", value):
        try:
            n = int(p)
        except ValueError:
            raise GridError(f"--epochs: {p!r} is not a whole number (1..{MAX_EPOCHS})") from None
        if not 1 <= n <= MAX_EPOCHS:
            raise GridError(f"--epochs: {n} is out of range (1..{MAX_EPOCHS})")
        out.append(n)
    return _unique(out)


def parse_adapter_sizes(value: str | Iterable) -> list[int]:
    allowed = ", ".join(map(str, ADAPTER_SIZES))
    out = []
    for p in _items("--adapter-size", value):
        try:
            n = int(p)
        except ValueError:
            raise GridError(f"--adapter-size: {p!r} is not a whole number (allowed: {allowed})") from None
        if n not in ADAPTER_SIZES:
            raise GridError(f"--adapter-size: {n} is not a Gemini adapter size (allowed: {allowed})")
        out.append(n)
    return _unique(out)


def parse_lr_multipliers(value: str | Iterable) -> list[float]:
    out = []
    for p in _items("--learning-rate-multiplier", value):
        try:
            x = float(p)
        except ValueError:
            raise GridError(f"--learning-rate-multiplier: {p!r} is not a number") from None
        if not math.isfinite(x) or not 0 < x <= MAX_LR_MULTIPLIER:
            raise GridError(f"--learning-rate-multiplier: {p} is out of range (> 0 and <= {MAX_LR_MULTIPLIER:g})")
        out.append(x)
    return _unique(out)


def _unique(values: list) -> list:
    return list(dict.fromkeys(values))


def expand_grid(epochs: str | Iterable, adapter_sizes: str | Iterable,
                learning_rate_multipliers: str | Iterable) -> list[GridPoint]:
    """Every combination, in the order given (duplicates dropped); GridError on any bad value."""
    points = [GridPoint(e, a, lr) for e, a, lr in itertools.product(
        parse_epochs(epochs), parse_adapter_sizes(adapter_sizes), parse_lr_multipliers(learning_rate_multipliers))]
    labels = [p.label for p in points]
    if len(set(labels)) != len(labels):  # e.g. 1e-05 vs 0.00001 print alike: refuse rather than merge
        raise GridError("--learning-rate-multiplier: two values print the same; give distinct values")
    if len(points) > MAX_GRID:
        raise GridError(f"grid: {len(points)} configurations is more than {MAX_GRID}; narrow the lists")
    return points


def checkpoint_label(label: str, checkpoint: dict) -> str:
    """`<configuration>-ckpt<id>`, the id reduced to label-safe characters."""
    return f"{label}-ckpt{re.sub(r'[^a-z0-9]+', '-', str(checkpoint['checkpoint_id']).lower()).strip('-')}"


def models_to_evaluate(grid: list[GridPoint], tuned: dict[str, dict], *, checkpoints: bool) -> list[dict]:
    """What the sweep evaluates: each tuned configuration (grid order) and, with `checkpoints`, each of its
    intermediate checkpoints (the last checkpoint is the job's own endpoint, already in the list)."""
    out = []
    for p in grid:
        t = tuned.get(p.label)
        if t is None:  # its job failed: reported, not ranked
            continue
        out.append(dict(t, hyperparameters=p.hyperparameters(), model=t["endpoint"]))
        for c in t.get("checkpoints") or [] if checkpoints else []:
            if c["endpoint"] != t["endpoint"]:
                out.append(dict(t, label=checkpoint_label(p.label, c), endpoint=c["endpoint"], model=c["endpoint"],
                                hyperparameters={**p.hyperparameters(), "epoch": c["epoch"]},
                                checkpoint={k: c[k] for k in ("checkpoint_id", "epoch", "step")}))
    return out


# --------------------------------------------------------------------------- the grid's cost


class GridCostCapExceeded(CostCapExceeded):
    """The grid's total estimated cost is over `max_tuning_cost_usd`: nothing was submitted."""

    def __init__(self, total_usd: float, cap_usd: float, per_point: dict[str, float]):
        self.total_usd, self.cap_usd, self.per_point = total_usd, cap_usd, per_point
        parts = ", ".join(f"{label} {usd(v)}" for label, v in per_point.items())
        RuntimeError.__init__(
            self, f"estimated cost of the grid's {len(per_point)} new job(s) is {usd(total_usd)} ({parts}), over "
                  f"the cap of ${cap_usd:g} (max_tuning_cost_usd); nothing was submitted. Raise the cap with "
                  f"--max-cost {max(math.ceil(total_usd), 1)} or narrow the grid")


def check_grid_cap(estimates: dict[str, CostEstimate], finished: Iterable[str], cap_usd: float) -> GridEstimate:
    """The configurations still to be paid (those without a finished or running job) as one figure; raises
    GridCostCapExceeded above the cap, before any job of the grid is submitted."""
    done = set(finished)
    grid = GridEstimate({label: est for label, est in estimates.items() if label not in done})
    if grid.total_usd > cap_usd:
        raise GridCostCapExceeded(grid.total_usd, cap_usd, {k: e.total_usd for k, e in grid.owed.items()})
    return grid
