"""The leaderboard's charts: points with intervals around the data, one colour per strategy, the tested step marked."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from matplotlib.colors import to_hex
from test_leaderboard import record

from metabench.leaderboard import aggregate, runs_frame
from metabench.plots import BUILT_IN_STRATEGIES, INTERVAL, cells_figure, run_figure, strategy_colour

BASE = [0.80, 0.82, 0.84, 0.86, 0.88]


def two_benchmarks() -> list[dict]:
    """Strategies in other orders (and one missing) on two benchmarks, so that panels differ; three seeds a cell, so
    that each has an interval over seeds."""
    records = []
    for benchmark, strategies in (("a", ("query", "metamix", "cob")), ("b", ("cob", "query", "my-plugin"))):
        for shift, strategy in enumerate(strategies):
            for learner in ("maml", "anil"):
                for seed in range(3):
                    scores = [s + 0.01 * shift + 0.004 * seed for s in BASE]
                    records.append(record(learner, strategy, seed, scores, benchmark=benchmark))
    return records


def test_cells_are_points_with_their_interval_on_an_axis_around_the_data_and_a_legend_beside_it():
    cells = aggregate(runs_frame(two_benchmarks()))
    figure = cells_figure(cells)
    figure.canvas.draw()
    for axis, (_, panel) in zip(figure.axes, cells.groupby("benchmark"), strict=True):
        assert not axis.patches and all(c.has_yerr for c in axis.containers)  # points with intervals, no bars
        low, high = axis.get_ylim()
        data = (panel["mean"] - panel[INTERVAL]).min() * 100, (panel["mean"] + panel[INTERVAL]).max() * 100
        assert 75 < low < data[0] and data[1] < high < 95  # percent, around the 80-90 % of the data, not from 0
        legend = axis.get_legend().get_window_extent()
        assert legend.x0 >= axis.get_window_extent().x1  # beside the data, never over it
    query = cells[(cells["benchmark"] == "a") & (cells["strategy"] == "query")].sort_values("learner")
    drawn = [line for line in figure.axes[0].lines if to_hex(line.get_color()) == strategy_colour("query")]
    assert np.allclose(drawn[0].get_ydata(), query["mean"] * 100)


def test_a_strategy_has_one_colour_in_every_panel_and_every_process():
    figure = cells_figure(aggregate(runs_frame(two_benchmarks())))
    colours = {}
    for axis in figure.axes:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            colours.setdefault(label, set()).add(to_hex(handle[0].get_color()))
    assert all(len(c) == 1 for c in colours.values()) and len(colours) == 4
    assert len(set().union(*colours.values())) == 4  # and no two strategies share one
    assert len({strategy_colour(s) for s in BUILT_IN_STRATEGIES}) == len(BUILT_IN_STRATEGIES)
    # a plugin's strategy: the same colour in another process (whose str hashes are salted differently)
    code = "from metabench.plots import strategy_colour; print(strategy_colour('my-plugin'))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == strategy_colour("my-plugin") == colours["my-plugin"].pop()


def test_curves_mark_the_best_validation_step_in_the_strategys_colour():
    made = record("maml", "metamix", 0, BASE)
    made["curves"].append({"step": 3, "train_pre": 0.3, "train_post": 0.8, "val_pre": 0.2, "val_post": 0.45})
    made["best_step"] = 2
    figure = run_figure(made)
    axis = figure.axes[0]
    marks = [line for line in axis.lines if "best validation" in line.get_label()]
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [2, 2]
    assert any(text.get_text() == "step 2" for text in axis.texts)
    val_post = next(line for line in axis.lines if line.get_label() == "meta-val post")
    assert to_hex(val_post.get_color()) == strategy_colour("metamix")
