"""Matplotlib figures of evaluation results, returned as PNG bytes.

Figures are built with the object API (`matplotlib.figure.Figure` + Agg canvas), not pyplot:
no global state, no GUI backend, safe from worker threads. The caller stores the bytes
through sftflow.infra.storage. Each `plot_*` has a `*_figure` twin returning the Figure (tests).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sftflow.evaluation.results import ExampleResult
from sftflow.evaluation.rouge import METRICS
from sftflow.evaluation.stats import METRIC_LABELS, Comparison, pair

BASE_COLOR = "#7f7f7f"
TUNED_COLOR = "#1f77b4"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def to_png(fig: Figure, dpi: int = 110) -> bytes:
    """PNG bytes of a figure; no timestamp/software metadata, so equal figures give equal bytes."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def _scores(results: Sequence[ExampleResult], metric: str) -> np.ndarray:
    """Scored examples' `metric` in ROUGE points (F-measure × 100), the unit every report shows."""
    return 100 * np.array([r.scores[metric] for r in results if r.scored], dtype=float)


_BINS = np.linspace(0.0, 100.0, 21)
POINTS_LABEL = "ROUGE points (F-measure × 100)"


# --------------------------------------------------------------------------- distributions


def distributions_figure(baseline: Sequence[ExampleResult], tuned: Sequence[ExampleResult] | None = None,
                         *, labels: tuple[str, str] = ("base", "tuned")) -> Figure:
    """One panel per metric: histogram of per-example scores, the two models overlaid."""
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    axes = fig.subplots(1, len(METRICS), sharey=True)
    for ax, m in zip(axes, METRICS):
        b = _scores(baseline, m)
        ax.hist(b, bins=_BINS, alpha=0.6, color=BASE_COLOR, label=f"{labels[0]} (n={len(b)}, mean {_mean(b)})")
        if tuned is not None:
            t = _scores(tuned, m)
            ax.hist(t, bins=_BINS, alpha=0.6, color=TUNED_COLOR,
                    label=f"{labels[1]} (n={len(t)}, mean {_mean(t)})")
        ax.set_title(METRIC_LABELS[m])
        ax.set_xlabel(POINTS_LABEL)
        ax.set_xlim(0, 100)
        ax.legend(fontsize=8, loc="upper right")
    axes[0].set_ylabel("examples")
    return fig


def _mean(x: np.ndarray) -> str:
    return f"{x.mean():.1f}" if len(x) else "n/a"


def plot_distributions(baseline: Sequence[ExampleResult], tuned: Sequence[ExampleResult],
                       *, labels: tuple[str, str] = ("base", "tuned")) -> bytes:
    return to_png(distributions_figure(baseline, tuned, labels=labels))


def plot_single_distribution(results: Sequence[ExampleResult], label: str = "model") -> bytes:
    """Score distributions of one evaluation (e.g. a baseline-only run)."""
    return to_png(distributions_figure(results, None, labels=(label, "")))


# --------------------------------------------------------------------------- means + CIs


def means_figure(comparison: Comparison) -> Figure:
    """Left: mean score per metric and model, whiskers = bootstrap 95% CI of *each mean*.
    Right: paired mean difference (tuned − base), whiskers = paired bootstrap 95% CI of the
    *difference* — the one that decides significance (overlapping mean CIs on the left do not
    mean "no difference": pairing removes the between-article variance)."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax_m, ax_d = fig.subplots(1, 2, width_ratios=[3, 2])
    metrics = list(comparison.metrics)
    x = np.arange(len(metrics))
    w = 0.38
    for off, side, color, label in ((-w / 2, "baseline", BASE_COLOR, "base"), (w / 2, "tuned", TUNED_COLOR, "tuned")):
        means = 100 * np.array([getattr(comparison.metrics[m], f"{side}_mean") for m in metrics])
        cis = 100 * np.array([getattr(comparison.metrics[m], f"{side}_ci") for m in metrics], dtype=float)
        err = np.abs(np.vstack([means - cis[:, 0], cis[:, 1] - means]))
        ax_m.bar(x + off, means, w, yerr=np.nan_to_num(err), capsize=4, color=color, label=label)
    ax_m.set_xticks(x, [METRIC_LABELS.get(m, m) for m in metrics])
    ax_m.set_ylabel("mean, ROUGE points")
    ax_m.set_title(f"Mean score, 95% bootstrap CI of each mean (n={comparison.n_paired} paired)")
    ax_m.legend()

    diffs = np.array([comparison.metrics[m].difference for m in metrics]) * 100
    lo = np.array([comparison.metrics[m].ci_low for m in metrics]) * 100
    hi = np.array([comparison.metrics[m].ci_high for m in metrics]) * 100
    err = np.nan_to_num(np.abs(np.vstack([diffs - lo, hi - diffs])))
    colors = ["#2ca02c" if lval > 0 else "#d62728" if h < 0 else BASE_COLOR for lval, h in zip(lo, hi)]
    ax_d.bar(x, diffs, 0.5, yerr=err, capsize=5, color=colors)
    ax_d.axhline(0, color="black", linewidth=0.8)
    ax_d.set_xticks(x, [METRIC_LABELS.get(m, m) for m in metrics])
    ax_d.set_ylabel("tuned − base (ROUGE points)")
    ax_d.set_title("Paired difference, 95% bootstrap CI")
    return fig


def plot_means_with_ci(comparison: Comparison) -> bytes:
    return to_png(means_figure(comparison))


# --------------------------------------------------------------------------- paired scatter


def paired_scatter_figure(baseline: Sequence[ExampleResult], tuned: Sequence[ExampleResult]) -> Figure:
    """Per example, base score (x) vs tuned score (y); points above the diagonal improved."""
    p = pair(baseline, tuned)
    fig = Figure(figsize=(12, 4), layout="constrained")
    axes = fig.subplots(1, len(METRICS))
    for ax, m in zip(axes, METRICS):
        b, t = 100 * p.baseline[m], 100 * p.tuned[m]
        ax.plot([0, 100], [0, 100], color="black", linewidth=0.8, linestyle="--")
        ax.scatter(b, t, s=14, alpha=0.7, color=TUNED_COLOR)
        up = int(np.sum(p.tuned[m] - p.baseline[m] > 1e-12))  # on F-measures, as the comparison counts them
        down = int(np.sum(p.baseline[m] - p.tuned[m] > 1e-12))
        ax.set_title(f"{METRIC_LABELS[m]}: {up} up, {down} down, {len(b) - up - down} tied")
        ax.set_xlabel("base (ROUGE points)")
        ax.set_ylabel("tuned (ROUGE points)")
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        ax.set_aspect("equal")
    return fig


def plot_paired_scatter(baseline: Sequence[ExampleResult], tuned: Sequence[ExampleResult]) -> bytes:
    return to_png(paired_scatter_figure(baseline, tuned))


# --------------------------------------------------------------------------- tuning curves


def loss_curves_figure(metrics: dict[str, list[tuple[int, float]]]) -> Figure:
    """Loss-like curves (names containing 'loss') in one panel, the others in a second."""
    loss = {k: v for k, v in metrics.items() if "loss" in k.lower() and v}
    other = {k: v for k, v in metrics.items() if "loss" not in k.lower() and v}
    panels = [(loss, "loss"), (other, "value")] if other else [(loss, "loss")]
    fig = Figure(figsize=(6 * len(panels), 4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (curves, ylabel) in zip(axes, panels):
        for name, points in sorted(curves.items()):
            pts = sorted((int(s), float(v)) for s, v in points if v is not None and math.isfinite(float(v)))
            if pts:
                steps, values = zip(*pts)
                ax.plot(steps, values, marker="o" if len(pts) < 30 else None, markersize=3, label=name)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        if curves:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    axes[0].set_title("Tuning curves")
    return fig


def plot_loss_curves(metrics: dict[str, list[tuple[int, float]]]) -> bytes:
    return to_png(loss_curves_figure(metrics))


# --------------------------------------------------------------------------- sweep leaderboard


def leaderboard_figure(board: dict) -> Figure:
    """ROUGE-L per configuration (leaderboard order); whiskers = base mean + the paired 95% CI of
    (configuration − base), so a whisker that reaches below the dashed base line is no significant win."""
    entries = board["entries"]
    fig = Figure(figsize=(max(5.0, 1.1 * len(entries) + 2), 4.2), layout="constrained")
    ax = fig.add_subplot()
    base = (board.get("base") or {}).get("means", {}).get("rougeL")
    means, low, high, colors = [], [], [], []
    for e in entries:
        m = e["means"].get("rougeL")
        d = e["vs_base"].get("rougeL", {})
        m = math.nan if m is None else 100 * m
        lo, hi, diff = (math.nan if d.get(k) is None else 100 * d[k] for k in ("ci_low", "ci_high", "difference"))
        means.append(m)
        low.append(m - (diff - lo))
        high.append(m + (hi - diff))
        best = e["label"] == board.get("best")
        colors.append("#2ca02c" if best else TUNED_COLOR if lo > 0 else BASE_COLOR)
    x = np.arange(len(entries))
    err = np.nan_to_num(np.abs(np.vstack([np.array(means) - low, np.array(high) - means]))) if entries else None
    ax.bar(x, np.nan_to_num(means), 0.6, yerr=err, capsize=5, color=colors)
    if base is not None:
        ax.axhline(100 * base, color="black", linestyle="--", linewidth=0.9, label=f"base {100 * base:.1f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xticks(x, [e["label"] for e in entries], rotation=30, ha="right")
    ax.set_ylabel("ROUGE-L (points)")
    best = board.get("best") or "none (no significant win over base)"
    ax.set_title(f"ROUGE-L per configuration, paired 95% CI vs base; best: {best}", fontsize=10)
    return fig


def plot_leaderboard(board: dict) -> bytes:
    return to_png(leaderboard_figure(board))
