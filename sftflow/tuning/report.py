"""A tuning job's status as markdown, and the lines the CLI prints for a dry run's plan."""

from __future__ import annotations

import json

from sftflow.cost import estimate as cost
from sftflow.backends.base import JobStatus


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
    return "\n".join(lines) + stats


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
