"""The champion: the model this storage root ships, replaced only by a significantly better one.

The record is an append-only log, one object per decision, under `<root>/champion/history/`:
`000001.json`, `000002.json`, ... Each is created with `storage.create_if_absent` (a Cloud Storage
`if_generation_match=0` upload, or an exclusive link locally), so two processes that decide at
once never overwrite each other: the loser of a slot takes the next one. The current champion is
the latest `promoted` entry, unless a `retired` entry (cleanup deleted its endpoint, or the user
retired it) followed it: then there is none until the next promotion. A promotion states which champion it
was compared with; if another process promoted meanwhile, `append` raises ChampionChanged instead of
crowning a model that was never compared with the new champion.

Rule: promote only when the lower bound of the paired 95% CI of (candidate − champion) on
ROUGE-L is above `margin` (ROUGE-L F-measure units: 0.01 = 1 point). No champion yet → the
candidate becomes the first one.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from sftflow.infra import storage
from sftflow.errors import SftflowError
from sftflow.infra.layout import child
from sftflow.evaluation.stats import MetricComparison

_ENTRY = re.compile(r"^(\d{6,})\.json$")
MAX_RACES = 50


class ChampionChanged(SftflowError, RuntimeError):
    """Another process promoted a model after this one compared against the previous champion."""


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def history_root(storage_root: str) -> str:
    return child(storage_root, "champion", "history")


def history(storage_root: str) -> list[dict[str, Any]]:
    """Every decision ever recorded, oldest first."""
    root = history_root(storage_root)
    found = []
    for uri in storage.list_uris(root):
        m = _ENTRY.match(storage.name_of(uri))
        if m:
            found.append((int(m.group(1)), uri))
    return [json.loads(storage.read_text(uri)) for _, uri in sorted(found)]


def current(storage_root: str, entries: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """The latest promoted entry, or None when nothing was ever promoted or the latest one was retired."""
    cur = None
    for e in history(storage_root) if entries is None else entries:
        if e.get("event") == "promoted":
            cur = e
        elif e.get("event") == "retired" and cur is not None and e.get("against") == cur["seq"]:
            cur = None
    return cur


def previous_decision(entries: list[dict[str, Any]], endpoint: str, against: int | None,
                      margin: float) -> dict[str, Any] | None:
    """The `kept` entry already recorded for this model against this champion with this margin: a rerun
    reuses it instead of comparing again and appending a duplicate."""
    for e in reversed(entries):
        if (e.get("event") == "kept" and e["model"].get("endpoint") == endpoint and e.get("against") == against
                and e.get("margin") == margin):
            return e
    return None


def name_of(entry: dict[str, Any]) -> str:
    """How messages name a recorded model: its label, else its endpoint."""
    return entry["model"].get("label") or entry["model"].get("endpoint")


def record(storage_root: str) -> dict[str, Any]:
    """{"current": entry or None, "history": [...]}: what `sftflow champion` shows."""
    entries = history(storage_root)
    return {"current": current(storage_root, entries), "history": entries}


def decide(candidate: str, champion: dict[str, Any] | None, vs_champion: MetricComparison | None, *,
           margin: float = 0.0) -> Decision:
    """Promote `candidate` over `champion` only on a significant ROUGE-L win (see the module docstring)."""
    if champion is None:
        return Decision(True, f"no champion yet: {candidate} becomes the first one")
    name = name_of(champion)
    if vs_champion is None or vs_champion.n_paired < 2 or math.isnan(vs_champion.ci_low):
        n = 0 if vs_champion is None else vs_champion.n_paired
        return Decision(False, f"{candidate} was not compared with champion {name} on enough paired examples "
                               f"(n={n}); {name} stays champion")
    d, lo, hi = (100 * x for x in (vs_champion.difference, vs_champion.ci_low, vs_champion.ci_high))
    ci = f"{d:+.1f} points [95% CI {lo:+.1f}, {hi:+.1f}], n={vs_champion.n_paired}"
    if vs_champion.ci_low > margin:
        return Decision(True, f"{candidate} beats champion {name} on ROUGE-L by {ci}: the lower bound is above "
                              f"promotion_margin {100 * margin:g} points")
    return Decision(False, f"{candidate} vs champion {name} on ROUGE-L: {ci}; the lower bound is not above "
                           f"promotion_margin {100 * margin:g} points, so {name} stays champion")


def decide_by_judge(candidate: str, champion: dict[str, Any] | None, judged: dict[str, Any] | None, *,
                    margin: float = 0.0) -> Decision:
    """promotion_metric 'judge': promote `candidate` only when the lower bound of the 95% CI of its pairwise-judge
    win rate against the champion (sftflow.judging.summary; ties count half) is above 50 % + `margin`."""
    if champion is None:
        return Decision(True, f"no champion yet: {candidate} becomes the first one")
    name = name_of(champion)
    n = (judged or {}).get("judged") or 0
    if judged is None or n < 2 or judged.get("ci_low") is None:
        return Decision(False, f"{candidate} was not judged against champion {name} on enough pairs (n={n}); "
                               f"{name} stays champion")
    w, lo, hi = (100 * judged[k] for k in ("win_rate", "ci_low", "ci_high"))
    ci = f"win rate {w:.1f}% [95% CI {lo:.1f}, {hi:.1f}], n={n} pairs judged in both orders"
    if judged["ci_low"] > 0.5 + margin:
        return Decision(True, f"{candidate} beats champion {name} by the pairwise judge: {ci}; the lower bound is "
                              f"above 50% + promotion_margin {100 * margin:g}")
    return Decision(False, f"{candidate} vs champion {name} by the pairwise judge: {ci}; the lower bound is not "
                           f"above 50% + promotion_margin {100 * margin:g}, so {name} stays champion")


def append(storage_root: str, *, event: str, model: dict[str, Any], reason: str,
           against: int | None, comparison: dict[str, Any] | None = None, margin: float = 0.0,
           extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Record one decision in the next free slot; returns the entry (with its `seq`).

    `event`: "promoted", "kept" or "retired". `against`: the seq of the champion the candidate was
    compared with (None: there was none), or the one retired. A promotion or retirement raises
    ChampionChanged when the current champion is no longer `against` — the caller compares again.
    """
    if event not in ("promoted", "kept", "retired"):
        raise ValueError(f"event: expected 'promoted', 'kept' or 'retired', got {event!r}")
    for _ in range(MAX_RACES):
        entries = history(storage_root)
        champ = current(storage_root, entries)
        if event in ("promoted", "retired") and (champ["seq"] if champ else None) != against:
            raise ChampionChanged(
                f"champion changed to #{champ['seq'] if champ else None} ({(champ or {}).get('model', {}).get('label')})"
                f" after {model.get('label')} was compared with #{against}; compare again")
        seq = (entries[-1]["seq"] if entries else 0) + 1
        entry = {"seq": seq, "event": event, "at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                 "model": model, "against": against, "reason": reason, "margin": margin,
                 "comparison": comparison, **(extra or {})}
        uri = child(history_root(storage_root), f"{seq:06d}.json")
        if storage.create_if_absent(uri, json.dumps(entry, indent=2).encode()):
            return entry
    raise RuntimeError(f"{history_root(storage_root)}: lost the race for a history slot {MAX_RACES} times")


def retire(storage_root: str, entry: dict[str, Any], reason: str) -> dict[str, Any] | None:
    """Record that champion `entry` no longer serves (its endpoint was deleted); returns the `retired` entry, or
    None when `entry` is no longer the current champion (nothing to retire). No champion until the next promotion."""
    try:
        return append(storage_root, event="retired", model=entry["model"], reason=reason, against=entry["seq"])
    except ChampionChanged:
        return None


def lines(rec: dict[str, Any]) -> list[str]:
    """The record as `sftflow champion` prints it. A checkpoint champion is served by its own endpoint."""
    cur = rec["current"]
    if cur is None:
        out = ["champion: none yet" if not rec["history"] or rec["history"][-1]["event"] != "retired"
               else f"champion: none (#{rec['history'][-1]['against']} was retired)"]
    else:
        m = cur["model"]
        ckpt = f", checkpoint {m['checkpoint']['checkpoint_id']}" if m.get("checkpoint") else ""
        out = [f"champion: {m.get('label')} (run {m.get('run_name')}{ckpt}, endpoint {m.get('endpoint')}), "
               f"since #{cur['seq']} at {cur['at']}"]
    out.append(f"history ({len(rec['history'])} decisions):")
    for e in rec["history"]:
        if e["event"] == "kept":  # the champion was kept: the challenger lost (not "kept: challenger")
            out.append(f"  #{e['seq']} {e['at']} challenger {e['model'].get('label')} lost, champion "
                       f"#{e.get('against')} stays — {e['reason']}")
            continue
        out.append(f"  #{e['seq']} {e['at']} {e['event']}: {e['model'].get('label')} — {e['reason']}")
    return out
