"""Scale as a measured axis (issue #24): MAML with the plain outer loss (Dq) against MAML-MetaMix on NME Omniglot as
training grows: does MetaMix's gap close, hold or widen?

Runs nothing: reads the records of ``benchmarks/nme_table5.toml``'s profiles ``quick`` (400 meta-steps),
``quick-1200`` and ``quick-3000`` (run them first with ``metabench run benchmarks/nme_table5.toml --profile P``), and
prints and plots, from the leaderboard's aggregation (the shared inference: per-seed means, Δ paired by training seed
with its 95% t interval), each cell's accuracy and the Δ at each training length.

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
PROFILES = ("quick", "quick-1200", "quick-3000")


def scale_cells(out: Path) -> pd.DataFrame:
    """The MAML cells of the scale profiles, one row per (profile, strategy), with their meta-steps and verdicts as
    the leaderboard gives them."""
    records = [r for _, r in results.read_records(out) if r["config"]["benchmark"] == BENCHMARK]
    records = [r for r in records if r["config"].get("profile") in PROFILES]
    steps = {r["config"]["profile"]: r["config"]["training"]["meta_steps"] for r in records}
    # aggregated with every learner of its profile, so that Holm's family is the leaderboard table's
    cells = leaderboard.aggregate(leaderboard.runs_frame(records))
    if cells.empty:
        return cells
    cells = cells[cells["learner"] == "maml"].copy()
    cells["meta_steps"] = cells["profile"].map(steps)
    return cells.sort_values(["meta_steps", "strategy"]).reset_index(drop=True)


def plot(cells: pd.DataFrame, path: Path) -> None:
    """Left: each strategy's accuracy (mean and 95% CI over seeds) against meta-steps; right: MetaMix − Dq (paired)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for strategy, group in cells.groupby("strategy"):
        colour = plots.strategy_colour(strategy)
        left.errorbar(
            group["meta_steps"],
            100 * group["mean"],
            yerr=100 * group["ci95"].fillna(0),
            marker="o",
            capsize=4,
            color=colour,
            label=f"{strategy} (seeds per point: {', '.join(map(str, group['seeds']))})",
        )
    left.set(xlabel="meta-steps", ylabel="test accuracy %\n(mean ± 95% CI over seeds)", xscale="log")
    left.legend(loc="best", fontsize=8)
    deltas = cells[cells["strategy"] == "metamix"]
    low, high = 100 * deltas["delta_ci_low"], 100 * deltas["delta_ci_high"]
    right.errorbar(
        deltas["meta_steps"],
        100 * deltas["delta"],
        yerr=[100 * deltas["delta"] - low, high - 100 * deltas["delta"]],
        marker="o",
        capsize=4,
        color=plots.strategy_colour("metamix"),
    )
    for row in deltas.itertuples():
        right.annotate(
            f"{row.verdict}, {int(row.paired_seeds)} seeds",
            (row.meta_steps, 100 * row.delta),
            textcoords="offset points",
            xytext=(6, 6),
            fontsize=8,
        )
    right.axhline(0, color="grey", linewidth=0.8)
    right.set(xlabel="meta-steps", ylabel="Δ MetaMix − Dq, points\n(95% CI, paired by seed)", xscale="log")
    for axis in (left, right):
        axis.set_xticks(sorted(cells["meta_steps"].unique()), labels=map(str, sorted(cells["meta_steps"].unique())))
        axis.minorticks_off()
    fig.suptitle("MAML on NME Omniglot 5-way 1-shot (conv4, 16 filters, meta-batch 4): Dq vs MetaMix", y=0.99)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--plot", type=Path, default=Path("results/plots/nme-scale.png"))
    args = parser.parse_args()
    cells = scale_cells(args.results)
    if cells.empty:
        raise SystemExit(f"{args.results}: no records of {BENCHMARK} at profiles {', '.join(PROFILES)}; run them first")
    rows = [
        [r.meta_steps, r.strategy, f"{100 * r.mean:.2f} ± {100 * r.ci95:.2f}", r.seeds]
        + (
            [f"{100 * r.delta:+.2f} [{100 * r.delta_ci_low:+.2f}, {100 * r.delta_ci_high:+.2f}]", r.verdict]
            if r.strategy == "metamix"
            else ["", ""]
        )
        for r in cells.itertuples()
    ]
    print(tabulate(rows, headers=["meta-steps", "strategy", "accuracy % (95% CI)", "seeds", "Δ vs Dq", "verdict"]))
    plot(cells, args.plot)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
