"""Leaderboards from the run records: ``LEADERBOARD.md``, ``leaderboard.csv`` and plots under the results folder.

A cell is (benchmark, profile, sampler, learner, strategy); its seeds are aggregated. Every cell of a benchmark is
scored on the same evaluation tasks, so a strategy is compared with the same learner's ``query`` strategy by a paired
t-test over tasks (per-task scores averaged over the seeds both cells have).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402 - after the backend choice
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402
from tabulate import tabulate  # noqa: E402

from metabench import results  # noqa: E402
from metabench.evaluation import summarize  # noqa: E402
from metabench.registry import Registry  # noqa: E402

BASELINE_STRATEGY = "query"
SIGNIFICANCE = 0.05
CELL = ["benchmark", "profile", "sampler", "learner", "strategy"]


def paired_test(a: Iterable[float], b: Iterable[float]) -> tuple[float, float]:
    """Mean difference ``a − b`` over paired scores and the two-sided paired t-test's p-value (1 when identical)."""
    a, b = np.asarray(list(a), dtype=np.float64), np.asarray(list(b), dtype=np.float64)
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"paired scores must have the same length >= 2, got {a.size} and {b.size}")
    difference = a - b
    if np.allclose(difference, difference[0]):  # no variance: the t statistic is undefined
        return float(difference.mean()), 1.0 if difference[0] == 0 else 0.0
    return float(difference.mean()), float(stats.ttest_rel(a, b).pvalue)


def runs_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per run record, with the fields the leaderboard reads."""
    rows = []
    for record in records:
        config = record["config"]
        test = (record.get("metrics") or {}).get("test", {})
        rows.append(
            {
                "benchmark": config["benchmark"],
                "profile": config.get("profile") or "-",
                "sampler": config["sampler"]["label"],
                "learner": config["learner"]["label"],
                "strategy": config["strategy"]["label"],
                "strategy_name": config["strategy"]["name"],
                "seed": config["seed"],
                "status": record["status"],
                "error": record.get("error"),
                "mean": test.get("mean"),
                "per_task": test.get("per_task"),
                "higher_is_better": (record.get("metric") or {}).get("higher_is_better", True),
                "metric": (record.get("metric") or {}).get("name", "accuracy"),
                "steps_per_s": record.get("steps_per_s"),
                "device": record["environment"]["device_name"],
                "commit": record["environment"].get("commit"),
                "started_at": record.get("started_at"),
                "config_hash": record["config_hash"],
                "meta_overfitting": record.get("meta_overfitting"),
                "diagnostics": record.get("diagnostics") or {},
                "best_step": record.get("best_step"),
                "has_curves": bool(record.get("curves")),
            }
        )
    return pd.DataFrame(rows)


def task_scores(runs: pd.DataFrame, seeds: Iterable[int]) -> np.ndarray:
    """Per-task scores averaged over ``seeds``."""
    chosen = runs[runs["seed"].isin(list(seeds))].sort_values("seed")
    return np.mean(np.stack([np.asarray(s, dtype=np.float64) for s in chosen["per_task"]]), axis=0)


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per cell over its successful runs: mean, CIs over tasks and over seeds, Δ vs ``query``, rank."""
    ok = runs[runs["status"] == "ok"]
    cells = []
    for key, group in ok.groupby(CELL, sort=False):
        seed_means = group["mean"].to_numpy(dtype=np.float64)
        by_seeds = summarize(seed_means)
        mo = pd.DataFrame([m for m in group["meta_overfitting"] if m])
        diagnostics = pd.DataFrame(list(group["diagnostics"]))
        cells.append(
            {
                **dict(zip(CELL, key, strict=True)),
                "strategy_name": group["strategy_name"].iloc[0],
                "metric": group["metric"].iloc[0],
                "higher_is_better": bool(group["higher_is_better"].iloc[0]),
                "mean": by_seeds["mean"],
                "ci95_tasks": summarize(task_scores(group, group["seed"]))["ci95"],
                "ci95_seeds": by_seeds["ci95"] if by_seeds["n"] > 1 else np.nan,
                "n_tasks": len(group["per_task"].iloc[0]),
                "seeds": len(group),
                "steps_per_s": group["steps_per_s"].astype(float).mean(),
                "device": ", ".join(sorted(set(group["device"]))),
                **{
                    f"{split}_{when}": mo[split].map(lambda m, w=when: m.get(w)).astype(float).mean()
                    for split in ("meta_train", "meta_test")
                    for when in ("pre", "post")
                    if split in mo
                },
                **diagnostics.mean(numeric_only=True).to_dict(),
                "plot_hash": next(iter(group[group["has_curves"]].sort_values("seed")["config_hash"]), None),
            }
        )
    table = pd.DataFrame(cells)
    if table.empty:
        return table
    table[["delta", "p_value"]] = [_versus_baseline(ok, cell) for cell in table.itertuples()]
    # lower is better for a regression error: rank on the score signed so that larger is better
    signed = table["mean"].where(table["higher_is_better"], -table["mean"])
    table["rank"] = signed.groupby([table["benchmark"], table["profile"]]).rank(ascending=False, method="min")
    return table.sort_values(["benchmark", "profile", "rank"]).reset_index(drop=True)


def _versus_baseline(ok: pd.DataFrame, cell: Any) -> tuple[float, float]:
    if cell.strategy_name == BASELINE_STRATEGY:
        return np.nan, np.nan
    same = (ok["benchmark"] == cell.benchmark) & (ok["profile"] == cell.profile)
    same &= (ok["sampler"] == cell.sampler) & (ok["learner"] == cell.learner)
    mine = ok[same & (ok["strategy"] == cell.strategy)]
    baseline = ok[same & (ok["strategy_name"] == BASELINE_STRATEGY)]
    seeds = sorted(set(mine["seed"]) & set(baseline["seed"]))
    if not seeds:
        return np.nan, np.nan
    return paired_test(task_scores(mine, seeds), task_scores(baseline, seeds))


def _number(value: float, scale: float, digits: int = 2) -> str:
    return "" if value is None or np.isnan(value) else f"{value * scale:.{digits}f}"


def _markdown_table(cells: pd.DataFrame) -> str:
    accuracy = cells["metric"].iloc[0] == "accuracy"
    scale = 100.0 if accuracy else 1.0
    unit = "accuracy %" if accuracy else f"{cells['metric'].iloc[0]} (lower is better)"
    rows = []
    for cell in cells.itertuples():
        mean = _number(cell.mean, scale)
        significant = not np.isnan(cell.p_value) and cell.p_value < SIGNIFICANCE
        delta = "" if np.isnan(cell.delta) else f"{cell.delta * scale:+.2f}{' *' if significant else ''}"
        rows.append(
            [
                int(cell.rank),
                cell.sampler,
                cell.learner,
                cell.strategy,
                f"**{mean}**" if cell.rank == 1 else mean,
                f"± {_number(cell.ci95_tasks, scale)}",
                f"± {_number(cell.ci95_seeds, scale)}" if not np.isnan(cell.ci95_seeds) else "",
                cell.seeds,
                delta,
                "" if np.isnan(cell.p_value) else f"{cell.p_value:.3g}",
                _number(cell.steps_per_s, 1.0),
                cell.device,
            ]
        )
    headers = [
        "rank",
        "sampler",
        "learner",
        "strategy",
        unit,
        "95% CI tasks",
        "95% CI seeds",
        "seeds",
        f"Δ vs {BASELINE_STRATEGY}",
        "p (paired t)",
        "steps/s",
        "device",
    ]
    return tabulate(rows, headers=headers, tablefmt="github")


ANALYSIS_COLUMNS = {
    "meta_train_pre": "meta-train pre",
    "meta_train_post": "meta-train post",
    "meta_test_pre": "meta-test pre",
    "meta_test_post": "meta-test post",
    "grad_norm_support": "‖∇‖ support",
    "grad_norm_query": "‖∇‖ query",
    "top_singular_value": "top σ",
}
"""The meta-overfitting analyses of a cell (MetaMix Fig. 2/3, Tables 1 and 9) and their column titles."""


def _detail_table(cells: pd.DataFrame) -> str:
    columns = ANALYSIS_COLUMNS
    present = [c for c in columns if c in cells]
    rows = []
    for _, cell in cells.iterrows():
        rows.append(
            [f"{cell['sampler']}/{cell['learner']}/{cell['strategy']}"]
            + [_number(cell[c], 1.0, 3) for c in present]
            + [f"[curves](plots/{cell['plot_hash']}.png)" if isinstance(cell["plot_hash"], str) else ""]
        )
    return tabulate(rows, headers=["cell", *[columns[c] for c in present], "plot (first seed)"], tablefmt="github")


def _unfinished(runs: pd.DataFrame) -> str:
    lines = []
    for run in (
        runs[runs["status"] != "ok"].sort_values(["status", "sampler", "learner", "strategy", "seed"]).itertuples()
    ):
        lines.append(f"- **{run.status}** {run.sampler}/{run.learner}/{run.strategy} seed {run.seed}: {run.error}")
    return "\n".join(lines)


def render_markdown(runs: pd.DataFrame, cells: pd.DataFrame) -> str:
    """The whole ``LEADERBOARD.md``: header, then per benchmark its table, unfinished cells and analyses."""

    def listing(column: str) -> str:
        return ", ".join(sorted({str(v) for v in runs[column].dropna()})) or "-"

    parts = [
        "# metabench leaderboard",
        "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC from {len(runs)} run records · commit {listing('commit')}"
        f" · device {listing('device')} · profile {listing('profile')}",
        "",
        "Mean over seeds of the mean over the fixed evaluation tasks (identical for every cell); 95% CI = "
        "1.96·std/√n over tasks (per-task scores averaged over seeds) and over seeds. Δ: difference to the same "
        f"sampler and learner with the `{BASELINE_STRATEGY}` strategy, paired t-test over tasks; * marks p < "
        f"{SIGNIFICANCE}. Best in bold.",
    ]
    for (benchmark, profile), group in runs.groupby(["benchmark", "profile"], sort=True):
        parts += ["", f"## {benchmark} (profile `{profile}`)", ""]
        mine = cells[(cells["benchmark"] == benchmark) & (cells["profile"] == profile)] if len(cells) else cells
        parts.append(_markdown_table(mine) if len(mine) else "No successful runs yet.")
        unfinished = _unfinished(group)
        if unfinished:
            parts += ["", "Runs without a score:", "", unfinished]
        if len(mine):
            parts += [
                "",
                "### Analyses",
                "",
                "Meta-overfitting (MetaMix Fig. 2 / Table 9): pre- and post-adaptation score on the query sets of "
                "meta-train tasks and of the meta-test tasks. Gradient norms of the outer loss w.r.t. the "
                "initialisation on support vs query (Fig. 3); top singular value of the support representations "
                "(Table 1). Means over seeds.",
                "",
                _detail_table(mine),
            ]
    return "\n".join(parts) + "\n"


def plot_cells(cells: pd.DataFrame, path: Path) -> None:
    """Score with 95% CI (over tasks) per strategy, grouped by learner; one panel per benchmark and sampler."""
    panels = list(cells.groupby(["benchmark", "profile", "sampler"], sort=True))
    figure, axes = plt.subplots(len(panels), 1, figsize=(9, 3.5 * len(panels)), squeeze=False)
    for axis, ((benchmark, profile, sampler), group) in zip(axes[:, 0], panels, strict=True):
        learners = list(dict.fromkeys(group["learner"]))
        strategies = list(dict.fromkeys(group["strategy"]))
        width = 0.8 / len(strategies)
        for i, strategy in enumerate(strategies):
            rows = group[group["strategy"] == strategy].set_index("learner").reindex(learners)
            x = np.arange(len(learners)) + (i - (len(strategies) - 1) / 2) * width
            axis.bar(x, rows["mean"], width, yerr=rows["ci95_tasks"], capsize=3, label=strategy)
        axis.set_xticks(np.arange(len(learners)), learners)
        axis.set_ylabel(group["metric"].iloc[0])
        axis.set_title(f"{benchmark} ({profile}) · sampler {sampler}")
        axis.legend(fontsize="small", ncols=min(len(strategies), 4))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_run(record: dict[str, Any], path: Path) -> None:
    """Pre- vs post-adaptation score on meta-train and meta-validation queries over training (MetaMix Fig. 2).

    Held-out classes are followed on the validation tasks: the test tasks are scored once, at the end."""
    curves = pd.DataFrame(record["curves"])
    figure, axis = plt.subplots(figsize=(6, 4))
    lines = {
        "train_pre": "meta-train pre",
        "train_post": "meta-train post",
        "val_pre": "meta-val pre",
        "val_post": "meta-val post",
    }
    for (column, label), style in zip(lines.items(), ["C0--", "C0-", "C1--", "C1-"], strict=True):
        axis.plot(curves["step"], curves[column], style, marker=".", label=label)
    axis.set_xlabel("meta-step")
    axis.set_ylabel(record["metric"]["name"])
    axis.set_title(record["label"], fontsize="small")
    axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def write_leaderboard(out: Path, registry: Registry | None = None) -> list[Path]:
    """Write ``LEADERBOARD.md``, ``leaderboard.csv``, ``leaderboard.png`` and missing per-run plots under ``out``."""
    records = results.load_records(out)
    runs = runs_frame(records)
    cells = aggregate(runs) if len(runs) else pd.DataFrame()
    paths = [out / "LEADERBOARD.md", out / "leaderboard.csv"]
    out.mkdir(parents=True, exist_ok=True)
    paths[0].write_text(render_markdown(runs, cells) if len(runs) else "# metabench leaderboard\n\nNo runs yet.\n")
    csv_columns = [c for c in cells.columns if c not in ("plot_hash",)]
    (cells[csv_columns] if len(cells) else cells).to_csv(paths[1], index=False)
    if len(cells):
        paths.append(out / "leaderboard.png")
        plot_cells(cells, paths[-1])
    for record in records:
        plot = out / "plots" / f"{record['config_hash']}.png"
        if record["status"] == "ok" and record.get("curves") and not plot.exists():
            plot.parent.mkdir(exist_ok=True)
            plot_run(record, plot)
            paths.append(plot)
    if registry is not None:
        registry.fire("metabench_leaderboard_written", paths=paths)
    return paths
