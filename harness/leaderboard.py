"""Leaderboards from the run records: ``LEADERBOARD.md``, ``leaderboard.csv`` and plots under the results folder.

A cell is one config (everything but the seed) evaluated on one set of tasks; its seeds are aggregated, and records
of different configs or different evaluation tasks are never averaged. Cells that share a label (benchmark, profile,
sampler, learner, strategy) but differ in config are shown apart, each with the keys that differ
(``training.meta_steps=30``). A strategy is compared with the same learner's plain strategy (``Strategy.plain``, stored
in each record) of the same config by a paired t-test over tasks, only when both were evaluated on identical tasks
(the records' task hashes); otherwise the reason is listed instead of a number. Records whose code differs from the
code installed now (kept with ``--reuse-stale``) are marked stale.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from tabulate import tabulate  # noqa: E402

from metabench import metrics, provenance, results  # noqa: E402
from metabench.cache import stable_hash  # noqa: E402
from metabench.errors import MetabenchError  # noqa: E402
from metabench.plots import plot_cells, plot_run  # noqa: E402 - show.py draws a run's curves too
from metabench.registry import Registry  # noqa: E402
from metabench.runspec import RunSpec, flat_config  # noqa: E402
from metabench.statistics import SIGNIFICANCE, summarize, task_scores, versus  # noqa: E402

CELL = ["benchmark", "profile", "sampler", "learner", "strategy"]
_NOT_CONFIG = ("seed", "profile")  # what varies inside a cell (seeds) or only names it (profile)


def staleness(record: dict[str, Any], registry: Registry | None) -> str:
    """Why ``record`` was made by other code than the installed one (``""`` when it was not, when a replay under the
    installed code matched its probe, or when unknown)."""
    if registry is None:
        return ""
    try:
        spec = RunSpec.from_dict(record["config"])
        now = provenance.of(spec, registry, record["provenance"].get("device_type", "cpu"))
    except (MetabenchError, KeyError, TypeError) as error:
        return f"cannot check its code: {error}"
    standing, detail = provenance.standing(record, now)
    return detail if standing == "stale" else ""


def runs_frame(records: Iterable[dict[str, Any]], registry: Registry | None = None) -> pd.DataFrame:
    """One row per run record, with the fields the leaderboard reads; with ``registry``, whether it is stale."""
    rows = []
    for record in records:
        config = record["config"]
        test = (record.get("metrics") or {}).get("test", {})
        flat = {k: v for k, v in flat_config(config).items() if k not in _NOT_CONFIG}
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
                "goal": metrics.goal_of(record.get("metric") or {}),
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
                "strategy_plain": bool(record.get("strategy_plain")),
                "tasks_hash": record.get("tasks_hash"),
                "config_flat": flat,
                "config_key": stable_hash(flat),
                "stale": staleness(record, registry),
            }
        )
    return pd.DataFrame(rows)


def _variants(ok: pd.DataFrame) -> dict[tuple[str, str], str]:
    """For each (config key, tasks hash) whose label is shared with another config: the keys that set it apart."""
    names: dict[tuple[str, str], str] = {}
    for _, group in ok.groupby(CELL, sort=False):
        members = group.drop_duplicates(["config_key", "tasks_hash"])
        if len(members) < 2:
            continue
        configs = list(members["config_flat"])
        keys = sorted({k for c in configs for k in c if any(c.get(k) != other.get(k) for other in configs)})
        for member in members.itertuples():
            text = ", ".join(f"{k}={_value(member.config_flat.get(k))}" for k in keys)
            names[(member.config_key, member.tasks_hash)] = text or f"evaluation tasks {member.tasks_hash}"
    return names


def _value(value: Any) -> str:
    return json.dumps(value, separators=(",", ":")) if isinstance(value, list | dict | str | bool) else str(value)


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per cell (config and evaluation tasks) over its successful runs: mean, CIs over tasks and over seeds,
    Δ vs the plain strategy on the same tasks, rank."""
    ok = runs[runs["status"] == "ok"].copy()
    if ok.empty:
        return pd.DataFrame()
    ok["tasks_hash"] = ok["tasks_hash"].fillna("")
    variants = _variants(ok)
    cells = []
    for key, group in ok.groupby([*CELL, "config_key", "tasks_hash"], sort=False):
        seed_means = group["mean"].to_numpy(dtype=np.float64)
        by_seeds = summarize(seed_means)
        mo = pd.DataFrame([m for m in group["meta_overfitting"] if m])
        diagnostics = pd.DataFrame(list(group["diagnostics"]))
        cells.append(
            {
                **dict(zip(CELL, key[: len(CELL)], strict=True)),
                "variant": variants.get(key[len(CELL) :], ""),
                "config_key": key[len(CELL)],
                "tasks_hash": key[len(CELL) + 1],
                "strategy_plain": bool(group["strategy_plain"].iloc[0]),
                "stale": "; ".join(sorted({s for s in group["stale"] if s})),
                "strategy_name": group["strategy_name"].iloc[0],
                "metric": group["metric"].iloc[0],
                "goal": group["goal"].iloc[0],
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
    compared = [_versus_baseline(ok, cell) for cell in table.itertuples()]
    table["delta"] = [c[0] for c in compared]
    table["p_value"] = [c[1] for c in compared]
    table["baseline"] = [c[2] for c in compared]
    table["not_tested"] = [c[3] for c in compared]
    signed = signed_mean(table)
    table["rank"] = signed.groupby([table["benchmark"], table["profile"]]).rank(ascending=False, method="min")
    return table.sort_values(["benchmark", "profile", "rank"]).reset_index(drop=True)


def _versus_baseline(ok: pd.DataFrame, cell: Any) -> tuple[float, float, str, str]:
    """Δ, p, the baseline strategy's label and, when no test was made, why: against the runs of the same benchmark,
    profile, sampler and learner, with a plain strategy and a config that differs only in the strategy."""
    if cell.strategy_plain:
        return np.nan, np.nan, "", ""
    same = (ok["benchmark"] == cell.benchmark) & (ok["profile"] == cell.profile)
    same &= (ok["sampler"] == cell.sampler) & (ok["learner"] == cell.learner)
    mine = ok[same & (ok["config_key"] == cell.config_key) & (ok["tasks_hash"] == cell.tasks_hash)]
    config = _without_strategy(mine["config_flat"].iloc[0])
    candidates = ok[same & ok["strategy_plain"]]
    candidates = candidates[[_without_strategy(c) == config for c in candidates["config_flat"]]]
    if candidates.empty:
        return np.nan, np.nan, "", "no plain-strategy run of the same config"
    on_same_tasks = candidates[candidates["tasks_hash"] == cell.tasks_hash]
    baseline = on_same_tasks if len(on_same_tasks) else candidates
    label = baseline["strategy"].iloc[0]
    outcome = versus(mine, baseline[baseline["config_key"] == baseline["config_key"].iloc[0]])
    if isinstance(outcome, str):
        return np.nan, np.nan, label, outcome
    return outcome[0], outcome[1], label, ""


def _without_strategy(flat: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flat.items() if not k.startswith("strategy.")}


def _number(value: float, scale: float, digits: int = 2) -> str:
    return "" if value is None or np.isnan(value) else f"{value * scale:.{digits}f}"


def signed_mean(cells: pd.DataFrame) -> pd.Series:
    """Each cell's mean signed by its metric's goal so that larger is better (:func:`metabench.metrics.signed`)."""
    return pd.Series(map(metrics.signed, cells["goal"], cells["mean"]), index=cells.index, dtype=float)


def metric_display(cells: pd.DataFrame) -> tuple[float, str]:
    """How a benchmark's scores are shown (:func:`metabench.metrics.display`): its first cell's metric and goal."""
    return metrics.display(cells["metric"].iloc[0], cells["goal"].iloc[0])


def _markdown_table(cells: pd.DataFrame) -> str:
    scale, unit = metric_display(cells)
    rows = []
    for cell in cells.itertuples():
        mean = _number(cell.mean, scale)
        significant = not np.isnan(cell.p_value) and cell.p_value < SIGNIFICANCE
        delta = "" if np.isnan(cell.delta) else f"{cell.delta * scale:+.2f}{' *' if significant else ''}"
        if cell.not_tested:
            delta = f"not tested: {cell.not_tested}"
        notes = ["stale"] if cell.stale else []
        rows.append(
            [
                int(cell.rank),
                cell.sampler,
                cell.learner,
                cell.strategy,
                cell.variant,
                f"**{mean}**" if cell.rank == 1 else mean,
                f"± {_number(cell.ci95_tasks, scale)}",
                f"± {_number(cell.ci95_seeds, scale)}" if not np.isnan(cell.ci95_seeds) else "",
                cell.seeds,
                delta,
                "" if np.isnan(cell.p_value) else f"{cell.p_value:.3g}",
                cell.baseline,
                _number(cell.steps_per_s, 1.0),
                cell.device,
                ", ".join(notes),
            ]
        )
    headers = [
        "rank",
        "sampler",
        "learner",
        "strategy",
        "config",
        unit,
        "95% CI tasks",
        "95% CI seeds",
        "seeds",
        "Δ vs plain",
        "p (paired t)",
        "plain",
        "steps/s",
        "device",
        "note",
    ]
    # columns that would be empty on every row (no variants, nothing stale) are left out
    keep = [i for i, header in enumerate(headers) if header not in ("config", "note") or any(r[i] for r in rows)]
    # numparse off: tabulate would turn "+5.00" into 5.0 and lose the sign of Δ
    table = [[r[i] for i in keep] for r in rows]
    return tabulate(table, headers=[headers[i] for i in keep], tablefmt="github", disable_numparse=True)


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
            [_cell_name(cell)]
            + [_number(cell[c], 1.0, 3) for c in present]
            + [f"[curves](plots/{cell['plot_hash']}.png)" if isinstance(cell["plot_hash"], str) else ""]
        )
    return tabulate(rows, headers=["cell", *[columns[c] for c in present], "plot (first seed)"], tablefmt="github")


def _cell_name(cell: Any) -> str:
    name = f"{cell['sampler']}/{cell['learner']}/{cell['strategy']}"
    return f"{name} ({cell['variant']})" if cell["variant"] else name


def _stale(cells: pd.DataFrame) -> str:
    return "\n".join(f"- {_cell_name(cell)}: {cell['stale']}" for _, cell in cells.iterrows() if cell["stale"])


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
        "1.96·std/√n over tasks (per-task scores averaged over seeds) and over seeds. A row is one config: runs of "
        "different configs are never averaged, and rows sharing a label show the keys that differ (config). Δ: "
        "difference to the same sampler, learner and config with the plain strategy (column plain, the algorithm as "
        f"published), paired t-test over identical evaluation tasks; * marks p < {SIGNIFICANCE}. Best in bold. "
        "stale: recorded by other code than the one installed now (kept with --reuse-stale); a record that "
        "`metabench verify` replayed bit-identically under the installed code is fresh (verified by replay of its "
        "first meta-steps).",
    ]
    for (benchmark, profile), group in runs.groupby(["benchmark", "profile"], sort=True):
        parts += ["", f"## {benchmark} (profile `{profile}`)", ""]
        mine = cells[(cells["benchmark"] == benchmark) & (cells["profile"] == profile)] if len(cells) else cells
        parts.append(_markdown_table(mine) if len(mine) else "No successful runs yet.")
        stale = _stale(mine) if len(mine) else ""
        if stale:
            parts += ["", "Stale rows (recorded by other code; `metabench run` without --reuse-stale reruns them):", ""]
            parts.append(stale)
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


def _plot_is_current(plot: Path, record_file: Path) -> bool:
    """A plot is redrawn when missing, empty, or older than its record."""
    try:
        stat = plot.stat()
    except FileNotFoundError:
        return False
    return stat.st_size > 0 and stat.st_mtime_ns >= record_file.stat().st_mtime_ns


def write_leaderboard(out: Path, registry: Registry | None = None) -> list[Path]:
    """Write ``LEADERBOARD.md``, ``leaderboard.csv``, ``leaderboard.png`` and the per-run plots under ``out``.

    With ``registry``, records made by other code than the installed one are marked stale. The caller fires
    ``metabench_leaderboard_written`` (the leaderboard does not run anything)."""
    stored = results.read_records(out)
    records = [record for _, record in stored]
    runs = runs_frame(records, registry)
    cells = aggregate(runs) if len(runs) else pd.DataFrame()
    paths = [out / "LEADERBOARD.md", out / "leaderboard.csv"]
    text = render_markdown(runs, cells) if len(runs) else "# metabench leaderboard\n\nNo runs yet.\n"
    results.atomic_write(paths[0], lambda handle: handle.write(text))
    csv_columns = [c for c in cells.columns if c not in ("plot_hash", "config_key", "config_flat")]
    table = cells[csv_columns] if len(cells) else cells
    results.atomic_write(paths[1], lambda handle: table.to_csv(handle, index=False))
    if len(cells):
        paths.append(out / "leaderboard.png")
        plot_cells(cells, paths[-1])
    for path, record in stored:
        plot = out / "plots" / f"{record['config_hash']}.png"
        if record["status"] == "ok" and record.get("curves") and not _plot_is_current(plot, path):
            plot_run(record, plot)
            paths.append(plot)
    return paths
