"""A hyperparameter grid from comma lists: each point is one tuning intent with a stable label.

`--epochs 1,2 --adapter-size 4,8` makes four configurations. Each axis is a tuning hyperparameter
(sftflow.tuning.hyperparameters) and each value is checked against its Settings limits (those Vertex accepts
for Gemini supervised tuning, e.g. adapter sizes 1, 2, 4, 8, 16:
https://cloud.google.com/vertex-ai/generative-ai/docs/models/gemini-use-supervised-tuning), before anything is
read or submitted.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from sftflow.cost.estimate import CostCapExceeded, CostEstimate, GridEstimate, usd
from sftflow.tuning import hyperparameters
from sftflow.tuning.hyperparameters import GridError, Hyperparameters, parse_axis

MAX_GRID = 64  # more configurations than this is almost surely a typo (and a large bill)

#: One configuration of the grid: the hyperparameters of one tuning job.
GridPoint = Hyperparameters


def _axis(name: str) -> tuple[Any, Any]:
    return str | None, Field(None, title=name, description=f"Comma list of {name} values, e.g. \"1,2\" "
                             f"({hyperparameters.setting_text(name)}). Unset: the run's {name}.")


#: The sweep flow's grid parameter: one comma list per tuning hyperparameter (the UI shows one field each).
SweepGrid = create_model("SweepGrid", __config__=ConfigDict(extra="forbid", frozen=True),
                         **{name: _axis(name) for name in hyperparameters.names()})


def axes_of(grid: BaseModel | Mapping[str, Any] | None) -> dict[str, str]:
    """The axes a grid parameter sets (not None)."""
    data = grid.model_dump() if isinstance(grid, BaseModel) else dict(grid or {})
    return {k: v for k, v in SweepGrid.model_validate(data).model_dump().items() if v is not None}


def expand_grid(axes: Mapping[str, str | Iterable]) -> list[Hyperparameters]:
    """Every combination of the axes' comma lists (hyperparameter name → "1,2"; a hyperparameter not named
    keeps its default), in the order given, duplicates dropped; GridError on any bad value."""
    values = {name: parse_axis(name, v) for name, v in axes.items()}
    points = [Hyperparameters(**dict(zip(values, combo))) for combo in itertools.product(*values.values())]
    labels = [p.label for p in points]
    if len(set(labels)) != len(labels):  # e.g. 1e-05 vs 0.00001 print alike: refuse rather than merge
        raise GridError("grid: two values print the same in a label; give distinct values")
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
        out.append(dict(t, hyperparameters=p.as_dict(), model=t["endpoint"]))
        for c in t.get("checkpoints") or [] if checkpoints else []:
            if c["endpoint"] != t["endpoint"]:
                out.append(dict(t, label=checkpoint_label(p.label, c), endpoint=c["endpoint"], model=c["endpoint"],
                                hyperparameters={**p.as_dict(), "epoch": c["epoch"]},
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
