"""Scale as a measured axis (issue #24): MAML with the plain outer loss (Dq) against MAML-MetaMix on NME Omniglot as
training grows and as the backbone widens: does MetaMix's gap close, hold or widen?

Runs nothing: reads the records of ``benchmarks/nme_table5.toml``'s profiles ``quick`` (400 meta-steps),
``quick-1200`` and ``quick-3000`` (16 filters), ``quick-1200-32f`` and ``quick-1200-64f`` (run them first with
``metabench run benchmarks/nme_table5.toml --profile P``), and prints and plots, from the leaderboard's aggregation
(the shared inference: per-seed means, Δ paired by training seed with its t interval), each cell's accuracy and the Δ
at each training length (16 filters) and at each width (1,200 meta-steps).

    python benchmarks/repro_scale.py [--results results] [--plot results/plots/nme-scale.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from tabulate import tabulate  # noqa: E402

from metabench import leaderboard, plots, results  # noqa: E402

BENCHMARK = "nme-omniglot-table5"
PROFILES = ("quick", "quick-1200", "quick-3000", "quick-1200-32f", "quick-1200-64f")
BASE_FILTERS, BASE_STEPS = 16, 1200  # the training-length curve is at 16 filters, the width points at 1,200 steps


def scale_cells(out: Path) -> pd.DataFrame:
    """The MAML cells of the scale profiles, one row per (profile, strategy), with their meta-steps and verdicts as
    the leaderboard gives them."""
    records = [r for _, r in results.read_records(out) if r["config"]["benchmark"] == BENCHMARK]
    records = [r for r in records if r["config"].get("profile") in PROFILES]
    steps = {r["config"]["profile"]: r["config"]["training"]["meta_steps"] for r in records}
    filters = {r["config"]["profile"]: r["config"]["backbone"]["params"]["filters"] for r in records}
    # aggregated with every learner of its profile, so that Holm's family is the leaderboard table's
    cells = leaderboard.aggregate(leaderboard.runs_frame(records))
    if cells.empty:
        return cells
    cells = cells[cells["learner"] == "maml"].copy()
    cells["meta_steps"] = cells["profile"].map(steps)
    cells["filters"] = cells["profile"].map(filters)
    return cells.sort_values(["filters", "meta_steps", "strategy"]).reset_index(drop=True)


def plot(cells: pd.DataFrame, path: Path) -> None:
    """Left: each strategy's accuracy (mean and CI over seeds) against meta-steps at 16 filters; middle: MetaMix − Dq
    (paired) against meta-steps; right: MetaMix − Dq against filters at 1,200 meta-steps."""
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(14, 3.8), gridspec_kw={"width_ratios": [3, 3, 2]})
    by_steps = cells[cells["filters"] == BASE_FILTERS]
    for strategy, group in by_steps.groupby("strategy"):
        left.errorbar(
            group["meta_steps"],
            100 * group["mean"],
            yerr=100 * group["ci95"].fillna(0),
            marker="o",
            capsize=4,
            color=plots.strategy_colour(strategy),
            label=f"{strategy} (seeds per point: {', '.join(map(str, group['seeds']))})",
        )
    left.set(xlabel="meta-steps", ylabel="test accuracy %\n(mean ± 95% CI over seeds)")
    left.legend(loc="best", fontsize=8)
    _delta_panel(middle, by_steps, "meta_steps")
    middle.set(xlabel="meta-steps")
    _delta_panel(right, cells[cells["meta_steps"] == BASE_STEPS], "filters")
    right.set(xlabel=f"conv4 filters ({BASE_STEPS} meta-steps)")
    for axis in (left, middle):
        _log_ticks(axis, by_steps["meta_steps"])
    _log_ticks(right, cells["filters"])
    fig.suptitle(
        f"MAML on NME Omniglot 5-way 1-shot (conv4, meta-batch 4; {BASE_FILTERS} filters unless said): Dq vs MetaMix",
        y=0.99,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _delta_panel(axis: plt.Axes, cells: pd.DataFrame, x: str) -> None:
    """MetaMix − Dq with its interval and verdict at each value of ``x``."""
    deltas = cells[cells["strategy"] == "metamix"]
    low, high = 100 * deltas["delta_ci_low"], 100 * deltas["delta_ci_high"]
    axis.errorbar(
        deltas[x],
        100 * deltas["delta"],
        yerr=[100 * deltas["delta"] - low, high - 100 * deltas["delta"]],
        marker="o",
        capsize=4,
        color=plots.strategy_colour("metamix"),
    )
    for row in deltas.itertuples():
        axis.annotate(
            f"{row.verdict}, {int(row.paired_seeds)} seeds",
            (getattr(row, x), 100 * row.delta),
            textcoords="offset points",
            xytext=(6, 6),
            fontsize=8,
        )
    axis.axhline(0, color="grey", linewidth=0.8)
    axis.set(ylabel="Δ MetaMix − Dq, points\n(CI, paired by seed)")


def _log_ticks(axis: plt.Axes, values: pd.Series) -> None:
    """A log axis labelled at the values run, and only there."""
    ticks = sorted(values.unique())
    axis.set_xscale("log")
    axis.set_xticks(ticks, labels=map(str, ticks))
    axis.minorticks_off()
    if len(ticks) == 1:  # one point: some room either side
        axis.set_xlim(ticks[0] / 1.6, ticks[0] * 1.6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--plot", type=Path, default=Path("results/plots/nme-scale.png"))
    args = parser.parse_args()
    cells = scale_cells(args.results)
    if cells.empty:
        raise SystemExit(f"{args.results}: no records of {BENCHMARK} at profiles {', '.join(PROFILES)}; run them first")
    rows = [
        [r.filters, r.meta_steps, r.strategy, f"{100 * r.mean:.2f} ± {100 * r.ci95:.2f}", r.seeds]
        + (
            [f"{100 * r.delta:+.2f} [{100 * r.delta_ci_low:+.2f}, {100 * r.delta_ci_high:+.2f}]", r.verdict]
            if r.strategy == "metamix"
            else ["", ""]
        )
        for r in cells.itertuples()
    ]
    headers = ["filters", "meta-steps", "strategy", "accuracy % (95% CI)", "seeds", "Δ vs Dq", "verdict"]
    print(tabulate(rows, headers=headers))
    plot(cells, args.plot)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
