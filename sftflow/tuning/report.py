"""A tuning job's status as markdown, and a dry run's plan: the exact job and the lines the CLI prints."""

from __future__ import annotations

import json

from sftflow.cost import estimate as cost
from sftflow.backends.base import JobStatus, TuningSpec


def data_warning(stats: dict) -> str | None:
    """One line when the job says it truncated or dropped training examples (`supervisedTuningDataStats`), else None:
    data Vertex did not train on as given must not go unnoticed."""
    truncated = int(stats.get("truncated_examples") or 0)
    reasons = stats.get("dropped_reasons") or []
    if not truncated and not reasons:
        return None
    indices = stats.get("truncated_indices") or []
    total = stats.get("example_count")
    where = f" (examples {', '.join(map(str, indices[:10]))}{', ...' if len(indices) > 10 else ''})" if indices else ""
    of = f" of {int(total):,}" if total is not None else ""
    why = f": {reasons[0]}" if reasons else ""
    return (f"warning: Vertex truncated or dropped {truncated or len(reasons):,}{of} training examples{where}{why}; "
            "they were not trained on as written")


def job_markdown(st: JobStatus, elapsed: float) -> str:
    stats = "".join(f"\n| {k} | {v} |" for k, v in sorted(st.stats.items()))
    steps = f"{st.step}/{st.total_steps}" if st.step is not None else "-"
    pct = f"{100 * st.progress:.0f}%" if st.progress is not None else "-"
    lines = [
        f"# Tuning job `{st.name}`",
        "",
        "| field | value |",
        "|---|---|",
        f"| state | **{st.state.value}** |",
        f"| elapsed | {elapsed:.0f} s |",
        f"| progress | {pct} (step {steps}) |",
        f"| created | {st.create_time or '-'} |",
        f"| tuned model | {st.tuned_model or '-'} |",
        f"| endpoint | {st.endpoint or '-'} |",
    ]
    if st.error:
        lines.append(f"| error | {st.error} |")
    if warning := data_warning(st.stats):
        lines[1:1] = ["", f"**{warning}**"]
    return "\n".join(lines) + stats


def planned_job(spec: TuningSpec, backend: str) -> dict:
    """The tuning job `spec` submits: base model, datasets, hyperparameters, display name, labels."""
    from sftflow.backends.vertex import KEY_LABEL

    job = {
        "base_model": spec.base_model,
        "training_dataset": spec.train_uri,
        "validation_dataset": spec.val_uri,
        "epoch_count": spec.epochs,
        "adapter_size": spec.adapter_size,
        "learning_rate_multiplier": spec.learning_rate_multiplier,
        "tuned_model_display_name": spec.display_name,
        "labels": {KEY_LABEL: spec.key},
    }
    if backend == "local":
        job.update(seed=spec.seed, budget_s=spec.budget_s)
    return job


def dry_run_lines(plan: dict) -> list[str]:
    """A dry run's plan (sftflow.tuning.step.dry_run_plan) as the CLI prints it."""
    est = cost.CostEstimate.from_dict(plan["estimate"])
    verdict = "within" if plan["within_cap"] else "OVER"
    lines = ["dry run: nothing submitted", *est.lines(),
             f"cap: ${plan['cap_usd']:g} (max_tuning_cost_usd): the estimate is {verdict} it"]
    if not plan["within_cap"]:
        lines.append("  " + cost.refusal_message(est, plan["cap_usd"]).replace("no job was submitted. ", ""))
    elif plan.get("approve_above_usd") is not None and est.total_usd > plan["approve_above_usd"]:
        lines.append(f"approval: needed (above approve_above_usd ${plan['approve_above_usd']:g}): a y/N prompt on "
                     "a terminal, --approve, or the Prefect UI for a deployment run")
    lines.append(f"job ({plan['backend']}):")
    lines += [f"  {k}: {json.dumps(v) if isinstance(v, dict) else v}" for k, v in plan["job"].items()]
    if plan["finished_record"]:
        lines.append("note: this intent already succeeded; a real run reuses its record and submits nothing")
    return lines
