"""What a run cost: the tuning job (billable tokens it reported, next to the estimate it was gated on)
and each evaluation (its responses' usage metadata × the model's generation price, `prices.py`).

A figure that cannot be known is None and shown as "-", never guessed: a model missing from the
price table, a job that reports no billable tokens (the local backend, or a job still running).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sftflow.cost import estimate as cost, prices
from sftflow.evaluation.results import ExampleResult, read_results

if TYPE_CHECKING:
    from sftflow.config import Settings


@dataclass(frozen=True)
class EvalCost:
    label: str
    model: str
    priced_as: str  # the base model whose price applies (a tuned endpoint is billed as its base model)
    examples: int
    input_tokens: int
    output_tokens: int
    usd: float | None
    source: str
    batch: bool = False
    estimated: bool = False  # tokens estimated (characters / 4): the pairwise judge, whose service reports none


@dataclass(frozen=True)
class TuningCost:
    estimate_usd: float
    estimate_tokens: int
    method: str
    billable_tokens: int | None
    billed_usd: float | None  # billable tokens (all epochs) × the training price; 0 on the local backend
    price_per_million: float
    source: str
    local: bool = False


@dataclass(frozen=True)
class RunCost:
    tuning: TuningCost | None
    evaluations: tuple[EvalCost, ...]

    @property
    def total_usd(self) -> float | None:
        """Tuning (billed if reported, else the estimate) + evaluations; None if any part is unknown."""
        parts = [e.usd for e in self.evaluations]
        if self.tuning is not None:
            parts.append(self.tuning.billed_usd if self.tuning.billed_usd is not None else self.tuning.estimate_usd)
        return None if any(p is None for p in parts) else sum(p for p in parts if p is not None)

    def to_dict(self) -> dict[str, Any]:
        return {"tuning": asdict(self.tuning) if self.tuning else None,
                "evaluations": [asdict(e) for e in self.evaluations], "total_usd": self.total_usd}

    def rows(self) -> list[dict[str, Any]]:
        """One row per paid step, for a table artifact."""
        out = []
        if t := self.tuning:
            out.append({"step": "tuning", "tokens in": t.billable_tokens if t.billable_tokens is not None else "-",
                        "tokens out": "-", "estimate usd": round(t.estimate_usd, 6),
                        "usd": round(t.billed_usd, 6) if t.billed_usd is not None else "-"})
        for e in self.evaluations:
            out.append({"step": e.label if e.estimated else f"evaluate {e.label}", "tokens in": e.input_tokens, "tokens out": e.output_tokens,
                        "estimate usd": "-", "usd": round(e.usd, 6) if e.usd is not None else "-"})
        return out

    def markdown(self) -> str:
        md = ["## Cost", "", "| step | tokens in | tokens out | estimate | cost |", "|---|---:|---:|---:|---:|"]
        if t := self.tuning:
            billed = "-" if t.billed_usd is None else cost.usd(t.billed_usd)
            tokens = "-" if t.billable_tokens is None else f"{t.billable_tokens:,} billable"
            estimate = f"{cost.usd(t.estimate_usd)} ({t.estimate_tokens:,} tokens)"
            md.append(f"| tuning | {tokens} | - | {estimate} | {billed} |")
        for e in self.evaluations:
            shown = "-" if e.usd is None else cost.usd(e.usd)
            step = f"{e.label} ({e.examples} pairs, both orders)" if e.estimated else f"evaluate {e.label} ({e.examples} examples)"
            md.append(f"| {step} | {e.input_tokens:,} | {e.output_tokens:,} | - | "
                      f"{shown} |")
        total = "-" if self.total_usd is None else cost.usd(self.total_usd)
        pending = self.tuning is not None and self.tuning.billed_usd is None
        note = (" (tuning at its estimate: the job reported no billable tokens)" if pending else
                f" (local runs are free; the tuning would cost an estimated {cost.usd(self.tuning.estimate_usd)} if "
                "billed by Vertex)" if self.tuning is not None and self.tuning.local else "")
        md += ["", f"**Total: {total}**{note}.", ""]
        if t := self.tuning:
            billed = ("the local backend bills nothing: the estimate is what Vertex would charge" if t.local else
                      "the cost column is the job's billable tokens (all epochs) × that price, '-' until it "
                      "reports them")
            md.append(f"- Tuning: ${t.price_per_million:g} per 1M training tokens ([source]({t.source}); setting "
                      f"`price_per_million_training_tokens`); tokens: {t.method}; {billed}.")
        for e in self.evaluations:
            where = f"[source]({e.source})" if e.source.startswith("https://") else e.source
            if e.estimated:
                md.append(f"- `{e.label}`: priced as `{e.priced_as}` ({where}); tokens estimated (characters / 4 "
                          "of each request and explanation: the service reports no usage).")
                continue
            md.append(f"- Evaluation `{e.label}`: priced as `{e.priced_as}` ({where}); tokens from each response's "
                      "usage metadata (output includes thinking)" + (", batch rate" if e.batch else "") + ".")
        return "\n".join(md) + "\n"


def evaluation_cost(label: str, model: str, priced_as: str, results: Iterable[ExampleResult],
                    price: prices.TokenPrice | None, *, batch: bool = False) -> EvalCost:
    """What an evaluation's responses cost: their usage metadata (`sftflow.evaluation.results`) × `price`."""
    rows = list(results)
    tin = sum(r.prompt_tokens or 0 for r in rows)
    tout = sum(r.output_tokens or 0 for r in rows)
    return EvalCost(label=label, model=model, priced_as=priced_as, examples=len(rows), input_tokens=tin,
                    output_tokens=tout, usd=price.usd(tin, tout, batch=batch) if price else None,
                    source=price.source if price else f"no price for {priced_as}: set generation_prices_usd",
                    batch=batch)


def with_rates(e: EvalCost, price: prices.TokenPrice | None) -> dict[str, Any]:
    """`e` with what its tokens cost at either rate (`online_usd`, `batch_usd`; None without a price), so an
    evaluation's report can show the rate it paid next to the other one."""
    other = {"online_usd": None, "batch_usd": None} if price is None else {
        "online_usd": price.usd(e.input_tokens, e.output_tokens),
        "batch_usd": price.usd(e.input_tokens, e.output_tokens, batch=True)}
    return asdict(e) | other


def tuning_cost(tuned: dict, price_per_million: float) -> TuningCost | None:
    """From the tune step's output: its `cost_estimate` and the job's reported `billable_tokens`."""
    est = tuned.get("cost_estimate")
    if not est:
        return None
    local = est.get("backend") == "local"
    billable = (tuned.get("stats") or {}).get("billable_tokens")
    billable = int(billable) if billable is not None else None
    billed = 0.0 if local else None if billable is None else cost.training_usd(billable, 1, price_per_million)
    return TuningCost(estimate_usd=est["total_usd"], estimate_tokens=est["billed_tokens"], method=est["method"],
                      billable_tokens=billable, billed_usd=billed, price_per_million=price_per_million,
                      source=est["price_source"], local=local)


def run_cost(settings: Settings, tuned: dict, evaluations: dict[str, dict], batch: Iterable[str] = (),
             judge: dict | None = None) -> RunCost:
    """The run's cost record. `evaluations`: {label: the evaluate step's output (model, results_uri)};
    `batch`: labels evaluated by batch prediction (billed at the batch rate); `judge`: the pairwise judge's
    cost row (sftflow.judging.step.judge_cost), when it was billed."""
    price = prices.price_for(settings.base_model, settings.backend, settings.generation_prices_usd)
    batch = set(batch)
    evals = tuple(evaluation_cost(label, ev["model"], settings.base_model, read_results(ev["results_uri"]), price,
                                  batch=label in batch)
                  for label, ev in evaluations.items())
    if judge:
        evals += (EvalCost(**judge),)
    return RunCost(tuning=tuning_cost(tuned, settings.price_per_million_training_tokens), evaluations=evals)
