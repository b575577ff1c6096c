"""The leaderboard's charts: every cell's score with its interval (``leaderboard.png``) and a run's training curves.

Charts show differences: a point per cell at its mean with its confidence interval, on an axis fitted to the data
(not bars from 0), legends beside or below the data. A strategy has one colour in every chart and every run
(:func:`strategy_colour`), and a run's curves mark the validation step whose weights were tested.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402 - after the backend choice
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from metabench import metrics, results  # noqa: E402

INTERVAL = "ci95"
"""The cells column drawn as each point's error bar (a half-width, in the metric's units)."""

BUILT_IN_STRATEGIES = ("query", "cob", "mixup-ss", "mixup-qq", "metamix", "multi-mix", "multimix", "metamixup")
_BUILT_IN_COLOURS = ("#222222", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
# strategies of plugins: picked by a hash of the name, the same in every process (Python's hash() is salted)
_OTHER_COLOURS = ("#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd")
_TRAIN_COLOUR = "#9a9a9a"  # meta-train curves: a grey that no strategy has


def strategy_colour(name: str) -> str:
    """The colour of strategy ``name`` in every chart: fixed for the built-in strategies, hash-stable for others."""
    if name in BUILT_IN_STRATEGIES:
        return _BUILT_IN_COLOURS[BUILT_IN_STRATEGIES.index(name)]
    digest = hashlib.sha256(name.encode()).digest()
    return _OTHER_COLOURS[int.from_bytes(digest[:4], "big") % len(_OTHER_COLOURS)]


def _series_order(series: tuple[str, str]) -> tuple[int, int, str, str]:
    """Where a (strategy, variant) sits in a panel and its legend, the same in every panel: built-ins first, in
    their order, then the others by name."""
    name, variant = series
    built_in = name in BUILT_IN_STRATEGIES
    return (0 if built_in else 1, BUILT_IN_STRATEGIES.index(name) if built_in else 0, name, variant)


_MARKERS = "osD^v"  # variants of one strategy (same label, other config) share its colour


def plot_cells(cells: pd.DataFrame, path: Path) -> None:
    """Write :func:`cells_figure` of ``cells`` to ``path``."""
    _save(cells_figure(cells), path, dpi=110)


def cells_figure(cells: pd.DataFrame) -> Figure:
    """Each cell's mean with its ``INTERVAL`` per strategy, grouped by learner; one panel per benchmark, profile and
    sampler (in the cells' order: :func:`metabench.leaderboard.table_order`), with the metric's target drawn where
    its goal has one."""
    panels = list(cells.groupby(["benchmark", "profile", "overrides", "sampler"], sort=False))
    figure, axes = plt.subplots(len(panels), 1, figsize=(10, 3.4 * len(panels)), squeeze=False)
    for axis, ((benchmark, profile, overrides, sampler), group) in zip(axes[:, 0], panels, strict=True):
        goal = group["goal"].iloc[0]
        scale, unit = metrics.display(group["metric"].iloc[0], goal)
        learners = sorted(set(group["learner"]))
        series = sorted(set(zip(group["strategy"], group["variant"], strict=True)), key=_series_order)
        width = 0.7 / len(series)
        for i, (strategy, variant) in enumerate(series):
            mine = (group["strategy"] == strategy) & (group["variant"] == variant)
            rows = group[mine].drop_duplicates("learner").set_index("learner").reindex(learners)
            marker = _MARKERS[[v for s, v in series if s == strategy].index(variant) % len(_MARKERS)]
            axis.errorbar(
                np.arange(len(learners)) + (i - (len(series) - 1) / 2) * width,
                rows["mean"] * scale,
                yerr=rows[INTERVAL] * scale,
                fmt=marker,
                color=strategy_colour(strategy),
                capsize=3,
                label=f"{strategy} ({variant})" if variant else strategy,
            )
        _draw_target(axis, goal, scale)
        axis.set_xticks(np.arange(len(learners)), learners)
        axis.set_xlim(-0.5, len(learners) - 0.5)
        axis.margins(y=0.15)
        axis.grid(axis="y", alpha=0.3)
        axis.set_ylabel(unit)
        table = ", ".join([profile, *([overrides] if overrides else [])])
        axis.set_title(f"{benchmark} ({table}) · sampler {sampler}", fontsize="medium")
        axis.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    figure.tight_layout()
    return figure


def plot_run(record: dict[str, Any], path: Path) -> None:
    """Write :func:`run_figure` of ``record`` to ``path``."""
    _save(run_figure(record), path, dpi=90)


def run_figure(record: dict[str, Any]) -> Figure:
    """Pre- vs post-adaptation score on meta-train and meta-validation queries over training (MetaMix Fig. 2), in
    the strategy's colour, with the best-validation step (the record's ``best_step``, whose weights were tested).

    Held-out classes are followed on the validation tasks: the test tasks are scored once, at the end."""
    curves = pd.DataFrame(record["curves"])
    goal = metrics.goal_of(record["metric"])
    scale, unit = metrics.display(record["metric"]["name"], goal)
    colour = strategy_colour(record["config"]["strategy"]["label"])
    figure, axis = plt.subplots(figsize=(6, 4.2))
    lines = {
        "train_pre": ("meta-train pre", _TRAIN_COLOUR, "--"),
        "train_post": ("meta-train post", _TRAIN_COLOUR, "-"),
        "val_pre": ("meta-val pre", colour, "--"),
        "val_post": ("meta-val post", colour, "-"),
    }
    for column, (label, line_colour, style) in lines.items():
        axis.plot(curves["step"], curves[column] * scale, style, color=line_colour, marker=".", label=label)
    best = record.get("best_step")
    if best is not None:
        axis.axvline(best, color="#555555", linestyle=":", linewidth=1.2, label="best validation (weights tested)")
        late = best > curves["step"].median()  # the label on the side with room: left of a late step
        axis.annotate(
            f"step {best}", (best, 1.0), xycoords=("data", "axes fraction"), xytext=(-3 if late else 3, -3),
            textcoords="offset points", ha="right" if late else "left", va="top", fontsize="x-small", color="#555555",
        )  # fmt: skip
    _draw_target(axis, goal, scale)
    axis.set_xlabel("meta-step")
    axis.set_ylabel(unit)
    axis.set_title(record["label"], fontsize="small")
    axis.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=3, frameon=False)
    figure.tight_layout()
    return figure


def _draw_target(axis: Axes, goal: metrics.Goal, scale: float) -> None:
    target = metrics.target(goal)
    if target is not None:
        axis.axhline(target * scale, color="#555555", linestyle="--", linewidth=1, label=f"target {target}")


def _save(figure: Figure, path: Path, dpi: int) -> None:
    """Atomically (a killed write leaves the old file or none, never a truncated one), legends outside included."""
    try:
        results.atomic_write(
            path, lambda handle: figure.savefig(handle, format="png", dpi=dpi, bbox_inches="tight"), mode="wb"
        )
    finally:
        plt.close(figure)
