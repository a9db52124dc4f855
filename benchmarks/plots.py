"""The figures of the comparison reports: a run's curves (`benchmarks.compare`, one seed) and the
bands over seeds (`benchmarks.seeds`), both drawn from the trainers' metrics.jsonl records.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.report import save_png


def pyplot():
    """matplotlib's pyplot on the file-only backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def grid(runs: list[dict]):
    """A figure with a (loss, accuracy) column of panels per variant, in the runs' order."""
    variants = list(dict.fromkeys(run["variant"] for run in runs))
    fig, axes = pyplot().subplots(2, len(variants), figsize=(4 * len(variants), 6.5), squeeze=False)
    return fig, {variant: (axes[0][column], axes[1][column]) for column, variant in enumerate(variants)}


def label(loss_ax, acc_ax, variant: str, runs: list[dict], loss_label: str) -> None:
    """Titles, axes and legends, and the tutorial's accuracy as a grey line kept in view."""
    loss_ax.set(title=variant, xlabel="step", ylabel=loss_label, yscale="log")
    acc_ax.set(xlabel="epoch", ylabel="test accuracy (%)")
    reference = next(run["reference_accuracy"] for run in runs if run["variant"] == variant)
    if reference is not None:
        acc_ax.axhline(100 * reference, color="grey", lw=0.8, label="tutorial")
        low, high = acc_ax.get_ylim()
        acc_ax.set_ylim(min(low, 100 * reference - 0.1), max(high, 100 * reference + 0.1))
    loss_ax.legend()
    acc_ax.legend()


def loss_points(records: list[dict]) -> tuple[list[int], list[float]]:
    """(steps, train losses) to plot: one per log interval, or per epoch when the run was
    shorter than one log interval (so the panel is never empty)."""
    points = [(r["step"], r["loss"]) for r in records if "loss" in r] or \
             [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
    return [step for step, _ in points], [loss for _, loss in points]


def curves(runs: list[dict], metrics: dict[tuple[str, str], list[dict]], path: Path) -> None:
    fig, panels = grid(runs)
    for variant, (loss_ax, acc_ax) in panels.items():
        for framework, style in (("torch", "-"), ("jax", "--")):
            records = metrics.get((framework, variant))
            if not records:
                continue
            epochs = [r for r in records if "test_accuracy" in r]
            steps, losses = loss_points(records)
            loss_ax.plot(steps, losses, style + ("o" if len(steps) < 3 else ""), label=framework)
            acc_ax.plot([r["epoch"] for r in epochs], [100 * r["test_accuracy"] for r in epochs], style + "o",
                        label=framework)
        label(loss_ax, acc_ax, variant, runs, "train loss (per log interval or epoch)")
    save_png(fig, path)


def curve(records: list[dict]) -> dict:
    """What the multi-seed bands are drawn from: loss per log interval, test accuracy per epoch."""
    steps, losses = loss_points(records)
    epochs = [r for r in records if "test_accuracy" in r]
    return {"steps": steps, "loss": losses, "epochs": [r["epoch"] for r in epochs],
            "test_accuracy": [r["test_accuracy"] for r in epochs]}


def bands(runs_by_seed: dict[int, list[dict]], path: Path) -> None:
    """Per variant: train loss and test accuracy per epoch, a mean line and a min-max band per framework."""
    runs = [run for seed_runs in runs_by_seed.values() for run in seed_runs]
    fig, panels = grid(runs)
    for variant, (loss_ax, acc_ax) in panels.items():
        for framework, color in (("torch", "tab:blue"), ("jax", "tab:orange")):
            drawn = [run["curve"] for run in runs if run["framework"] == framework and run["variant"] == variant]
            if not drawn:
                continue
            for ax, x_key, y_key, scale in ((loss_ax, "steps", "loss", 1), (acc_ax, "epochs", "test_accuracy", 100)):
                x = drawn[0][x_key]
                y = scale * np.array([points[y_key] for points in drawn if points[x_key] == x])
                ax.plot(x, y.mean(axis=0), color=color, marker="o" if len(x) < 3 else None,
                        label=f"{framework} (mean of {len(y)})")
                ax.fill_between(x, y.min(axis=0), y.max(axis=0), color=color, alpha=0.25, lw=0)
        label(loss_ax, acc_ax, variant, runs, "train loss (band: min-max over seeds)")
    save_png(fig, path)
