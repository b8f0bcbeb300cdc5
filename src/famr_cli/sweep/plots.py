"""The sweep's plots (PNG, matplotlib, no display needed): accuracy vs each numeric swept key, and the
forget/retain trade-off with the original model and Retrain as reference points."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # sweeps run on headless nodes; never try to open a window
import matplotlib.pyplot as plt  # noqa: E402

from famr_cli.sweep.jobs import Job  # noqa: E402
from famr_cli.sweep.summary import SweepSummary, forget_figure, retain_figure  # noqa: E402

TRADEOFF_PNG = "tradeoff.png"
RELEARNING_PNG = "relearning.png"
REFERENCE_STYLE = {"original": ("tab:gray", "o"), "retrain": ("tab:green", "*")}


def _float(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def numeric_keys(summary: SweepSummary) -> list[str]:
    """Swept keys whose every value is a number (λ, lr, epochs): they get an accuracy-vs-value plot."""
    return [k for k in summary.keys if all(_float(job.overrides.get(k)) is not None for job in summary.jobs)]


def plot_name(key: str) -> str:
    return f"accuracy_vs_{key.rsplit('.', 1)[-1]}.png"


def _curves(summary: SweepSummary, key: str) -> dict[str, list[tuple[float, Job]]]:
    """Finished jobs along ``key``, one curve per combination of the other swept keys."""
    others = [k for k in summary.keys if k != key]
    curves: dict[str, list[tuple[float, Job]]] = defaultdict(list)
    for job in summary.jobs:
        if job.ok:
            label = ", ".join(f"{k}={job.overrides.get(k)}" for k in others)
            curves[label].append((_float(job.overrides[key]), job))
    return {label: sorted(points, key=lambda p: p[0]) for label, points in curves.items()}


def _reference_lines(ax, summary: SweepSummary, figure) -> None:
    for name, scores in summary.references().items():
        label, value = figure(scores)
        if value is not None:
            color, _ = REFERENCE_STYLE[name]
            ax.axhline(value, color=color, linestyle="--", linewidth=1, label=f"{name} ({value:.1f})")


def accuracy_plot(summary: SweepSummary, key: str, path: Path) -> Path:
    curves = _curves(summary, key)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    values = [x for points in curves.values() for x, _ in points]
    for ax, figure in zip(axes, (forget_figure, retain_figure)):
        ylabel = "accuracy (%)"
        for label, points in curves.items():
            ys = [figure(job.results["metrics"]["unlearned"]) for _, job in points]
            ylabel = ys[0][0]
            ax.plot([x for x, _ in points], [y for _, y in ys], marker="o", label=label or "unlearned")
        _reference_lines(ax, summary, figure)
        if values and min(values) > 0:
            ax.set_xscale("log")
        _label_axes(ax, key, ylabel)
    fig.suptitle(f"{summary.sweep_dir.name}: accuracy vs {key}")
    return _save(fig, path)


def _label_axes(ax, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=120)
    plt.close(fig)  # sweeps of many keys must not accumulate open figures
    return path


def tradeoff_plot(summary: SweepSummary, path: Path) -> Path:
    """Forget accuracy (x, lower is better) against retained accuracy (y, higher is better)."""
    fig, ax = plt.subplots(figsize=(6, 5), constrained_layout=True)
    along = next(iter(numeric_keys(summary)), None)
    groups = _curves(summary, along) if along else {"": [(0.0, job) for job in summary.jobs if job.ok]}
    xlabel, ylabel = "forget accuracy (%)", "retained test acc (%)"
    for label, points in groups.items():
        xs, ys = [], []
        for value, job in points:
            scores = job.results["metrics"]["unlearned"]
            (xlabel, x), (ylabel, y) = forget_figure(scores), retain_figure(scores)
            if x is None or y is None:
                continue
            xs.append(x)
            ys.append(y)
            text = f"{value:g}" if along else ", ".join(str(job.overrides.get(k, "")) for k in summary.keys) or job.dir.name
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        name = label or (f"unlearned (labels: {along})" if along else "jobs")
        ax.plot(xs, ys, marker="o", linestyle="-" if along else "none", label=name)
    for name, scores in summary.references().items():
        (_, x), (_, y) = forget_figure(scores), retain_figure(scores)
        if x is not None and y is not None:
            color, marker = REFERENCE_STYLE[name]
            ax.scatter([x], [y], color=color, marker=marker, s=120, zorder=3, label=name)
    _label_axes(ax, xlabel, ylabel)
    ax.set_title(f"{summary.sweep_dir.name}: forget vs retain")
    return _save(fig, path)


def _relearning_point(results: dict, model: str) -> tuple[float | None, float | None]:
    """(accuracy on the forgotten held-out images before, after the smallest-k relearning attack) of one model."""
    rob = results.get("robustness") or {}
    k = (rob.get("headline") or {}).get("relearn_k")
    relearn = (rob.get(model) or {}).get("relearn") or {}
    return relearn.get("forget_acc_before"), relearn.get(f"full_k{k}_forget_acc")


def relearning_plot(summary: SweepSummary, path: Path) -> Path | None:
    """Accuracy on what was forgotten (x) against what a k-shot relearning attack brings back (y), one
    point per job, with the original and Retrain under the same attack; None when no job ran the check."""
    along = next(iter(numeric_keys(summary)), None)
    points = []
    for job in summary.jobs:
        if job.ok and job.results:
            x, y = _relearning_point(job.results, "unlearned")
            if x is not None and y is not None:
                points.append((_float(job.overrides.get(along)) if along else None, x, y, job))
    if not points:
        return None
    points.sort(key=lambda p: (p[0] is None, p[0] or 0.0))
    fig, ax = plt.subplots(figsize=(6, 5), constrained_layout=True)
    ax.plot([p[1] for p in points], [p[2] for p in points], marker="o", linestyle="-" if along else "none", label="unlearned")
    for value, x, y, job in points:
        text = f"{value:g}" if value is not None else job.dir.name
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    first = points[0][3].results
    for name in ("original", "retrain"):
        x, y = _relearning_point(first, name)
        if x is not None and y is not None:
            color, marker = REFERENCE_STYLE[name]
            ax.scatter([x], [y], color=color, marker=marker, s=120, zorder=3, label=name)
    k = ((first.get("robustness") or {}).get("headline") or {}).get("relearn_k")
    _label_axes(ax, "forgotten held-out accuracy (%)", f"after {k}-shot relearning (%)")
    ax.set_title(f"{summary.sweep_dir.name}: forgotten vs relearnable" + (f" (labels: {along})" if along else ""))
    return _save(fig, path)


def write_plots(summary: SweepSummary) -> list[Path]:
    if not any(job.ok for job in summary.jobs):
        return []  # nothing finished: no figure would show anything
    written = [accuracy_plot(summary, key, summary.sweep_dir / plot_name(key)) for key in numeric_keys(summary)]
    written.append(tradeoff_plot(summary, summary.sweep_dir / TRADEOFF_PNG))
    relearning = relearning_plot(summary, summary.sweep_dir / RELEARNING_PNG)
    return written + ([relearning] if relearning else [])
