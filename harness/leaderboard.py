"""Leaderboards from the run records: ``LEADERBOARD.md``, ``leaderboard.csv`` and plots under the results folder.

A cell is one config (everything but the seed) evaluated on one set of tasks; records of different configs or
different evaluation tasks are never averaged. Cells that share a label (benchmark, profile, sampler, learner,
strategy) but differ in config are shown apart, each with the keys that differ (``training.meta_steps=30``). A
strategy is compared with the same learner's plain strategy (``Strategy.plain``, stored in each record) of the same
config, on identical evaluation tasks (the records' task hashes), otherwise the reason is listed instead of a number.
CIs, Δs and verdicts are :mod:`metabench.inference`'s: over training seeds, paired by seed, Holm within each table;
:func:`shown` is the one style every table format (Markdown here, LaTeX and HTML in :mod:`metabench.tables`) prints.
Records whose code differs from the code installed now (kept with ``--reuse-stale``) are marked stale.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from tabulate import tabulate  # noqa: E402

from metabench import inference, metrics, provenance, results  # noqa: E402
from metabench.cache import stable_hash  # noqa: E402
from metabench.errors import MetabenchError  # noqa: E402
from metabench.plots import plot_cells, plot_run  # noqa: E402 - show.py draws a run's curves too
from metabench.registry import Registry  # noqa: E402
from metabench.runspec import flat_config  # noqa: E402

TABLE = ["benchmark", "profile", "overrides"]  # one table (section) per key: its ranks, Holm family and scale
CELL = [*TABLE, "sampler", "learner", "strategy"]
_NOT_CONFIG = ("seed", "profile", "analysis")  # what varies inside a cell (seeds), names it, or says how to read it


def cell_config(config: dict[str, Any]) -> dict[str, Any]:
    """A record's config as dotted keys, less what varies inside a cell; its :func:`stable_hash` is the cell's key."""
    return {k: v for k, v in flat_config(config).items() if k.split(".")[0] not in _NOT_CONFIG}


def staleness(record: dict[str, Any], code: provenance.CodeNow | None) -> str:
    """Why ``record`` was made by other code than the installed one, ``code`` (``""`` when it was not, when a replay
    under the installed code matched its probe, or when unknown)."""
    if code is None:
        return ""
    try:
        now = code.of_record(record)
    except (MetabenchError, KeyError, TypeError) as error:
        return f"cannot check its code: {error}"
    standing, detail = provenance.standing(record, now)
    return detail if standing == "stale" else ""


def runs_frame(records: Iterable[dict[str, Any]], registry: Registry | None = None) -> pd.DataFrame:
    """One row per run record, with the fields the leaderboard reads; with ``registry``, whether it is stale."""
    code = provenance.CodeNow(registry) if registry is not None else None
    rows = []
    for record in records:
        config = record["config"]
        test = (record.get("metrics") or {}).get("test", {})
        flat = cell_config(config)
        analysis = config.get("analysis") or {}
        rows.append(
            {
                "benchmark": config["benchmark"],
                "profile": config.get("profile") or "-",
                "overrides": overrides_text(record),
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
                "equivalence_margin": analysis.get("equivalence_margin"),
                "looks": analysis.get("looks", 1),
                "round": analysis.get("round", 1),
                "config_key": stable_hash(flat),
                "stale": staleness(record, code),
            }
        )
    return pd.DataFrame(rows)


def overrides_text(record: dict[str, Any]) -> str:
    """The ``--set`` overrides a record was made under, as typed (``"--set training.meta_steps=500"``); ``""`` for
    none or a record from before they were recorded."""
    return ", ".join(f"--set {text}" for text in record.get("overrides") or ())


def table_order(frame: pd.DataFrame, first: str | None = None) -> pd.DataFrame:
    """``frame`` (runs or cells) ordered table by table: benchmark ``first`` (the one the command ran), then the
    others by name, profile and overrides; rows keep their order within a table."""
    later = frame["benchmark"] != first
    keys = pd.DataFrame({"later": later, **{k: frame[k] for k in TABLE}}, index=frame.index)
    return frame.loc[keys.sort_values(["later", *TABLE], kind="stable").index]


def table_groups(frame: pd.DataFrame, first: str | None = None) -> list[tuple[tuple[str, str, str], pd.DataFrame]]:
    """``frame`` split by :data:`TABLE` in :func:`table_order`."""
    return list(table_order(frame, first).groupby(TABLE, sort=False))


def check_first(first: str | None, benchmarks: Iterable[str]) -> None:
    """``--first NAME`` names a benchmark of the records."""
    present = sorted(set(benchmarks))
    if first is not None and first not in present:
        raise MetabenchError(f"--first {first}: no such benchmark in the records; benchmarks: {', '.join(present)}")


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
    """One row per cell (config and evaluation tasks) over its successful runs: the mean and 95% CI over per-seed
    means, and the comparison with the plain strategy of the same config (Δ, its CI, p, verdict), ranked."""
    ok = runs[runs["status"] == "ok"].copy()
    if ok.empty:
        return pd.DataFrame()
    ok["tasks_hash"] = ok["tasks_hash"].fillna("")
    variants = _variants(ok)
    cells = []
    for key, group in ok.groupby([*CELL, "config_key", "tasks_hash"], sort=False):
        summary = inference.summarize_cell(group["mean"].to_numpy(dtype=np.float64))
        mo = pd.DataFrame([m for m in group["meta_overfitting"] if m])
        diagnostics = pd.DataFrame(list(group["diagnostics"]))
        metric, goal = group["metric"].iloc[0], group["goal"].iloc[0]
        margins = [m for m in group["equivalence_margin"] if m is not None and not pd.isna(m)]
        cells.append(
            {
                **dict(zip(CELL, key[: len(CELL)], strict=True)),
                "variant": variants.get(key[len(CELL) :], ""),
                "config_key": key[len(CELL)],
                "tasks_hash": key[len(CELL) + 1],
                "strategy_plain": bool(group["strategy_plain"].iloc[0]),
                "stale": "; ".join(sorted({s for s in group["stale"] if s})),
                "strategy_name": group["strategy_name"].iloc[0],
                "metric": metric,
                "goal": goal,
                "mean": summary.mean,
                "ci95": summary.ci95,
                "seed_sd": summary.sd,
                "seeds": summary.n_seeds,
                "rounds": int(group["round"].max()),
                "looks": int(group["looks"].max()),
                "margin": max(margins) if margins else inference.DEFAULT_MARGIN.get(metric, np.nan),
                "n_tasks": len(group["per_task"].iloc[0]),
                "steps_per_s": group["steps_per_s"].astype(float).mean(),
                "last_started": group["started_at"].dropna().max(),
                "device": ", ".join(sorted(set(group["device"]))),
                **{
                    f"{split}_{when}": mo[split].map(lambda m, w=when: m.get(w)).astype(float).mean()
                    for split in ("meta_train", "meta_test")
                    for when in ("pre", "post")
                    if split in mo
                },
                **diagnostics.mean(numeric_only=True).to_dict(),
                "plot_hash": next(iter(group[group["has_curves"]].sort_values("seed")["config_hash"]), None),
                "seed_means": dict(zip(group["seed"], _compared(goal, group["mean"].astype(float)), strict=True)),
                "family_key": stable_hash(_without_strategy(group["config_flat"].iloc[0])),
            }
        )
    table = _compare(pd.DataFrame(cells))
    signed = signed_mean(table)
    table["rank"] = signed.groupby([table[k] for k in TABLE]).rank(ascending=False, method="min")
    scales = {key: scale_text(group) for key, group in runs.groupby(TABLE)}  # all records, as LEADERBOARD.md says
    table["scale"] = [scales[key] for key in zip(*(table[k] for k in TABLE), strict=True)]
    return table.drop(columns=["seed_means", "family_key"]).sort_values([*TABLE, "rank"]).reset_index(drop=True)


COMPARISON_COLUMNS = (
    "baseline",
    "not_tested",
    "delta",
    "delta_ci_low",
    "delta_ci_high",
    "p_value",
    "p_holm",
    "mde",
    "paired_seeds",
    "alpha",
    "verdict",
)


def _compare(table: pd.DataFrame) -> pd.DataFrame:
    """Each non-plain cell against the plain strategy of the same benchmark, profile, sampler, learner and config
    (all but the strategy), on the same evaluation tasks, paired by seed; Holm over each table's comparisons, at
    ``alpha / looks`` when its cells were run until decided."""
    rows: list[dict[str, Any]] = []
    plain = table[table["strategy_plain"]]
    by_family = {key: group for key, group in plain.groupby([*TABLE, "sampler", "learner", "family_key"])}
    looks = table.groupby(TABLE)["looks"].transform("max")
    for cell, cell_looks in zip(table.itertuples(), looks, strict=True):
        row: dict[str, Any] = dict.fromkeys(COMPARISON_COLUMNS, np.nan) | {
            "baseline": "",
            "not_tested": "",
            "verdict": "",
        }
        row["alpha"] = inference.ALPHA / cell_looks
        rows.append(row)
        if cell.strategy_plain:
            continue
        family = (cell.benchmark, cell.profile, cell.overrides, cell.sampler, cell.learner, cell.family_key)
        candidates = by_family.get(family)
        if candidates is None:
            row["not_tested"] = "no plain-strategy run of the same config"
            continue
        on_same_tasks = candidates[candidates["tasks_hash"] == cell.tasks_hash]
        baseline = (on_same_tasks if len(on_same_tasks) else candidates).iloc[0]
        row["baseline"] = baseline["strategy"]
        row["baseline_key"] = baseline["config_key"]
        reason = inference.not_comparable(
            {cell.tasks_hash}, {baseline["tasks_hash"]}, set(cell.seed_means) & set(baseline["seed_means"])
        )
        if reason:
            row["not_tested"] = reason
            continue
        comparison = inference.compare(cell.seed_means, baseline["seed_means"], row["alpha"])
        row |= {
            "delta": comparison.delta,
            "delta_ci_low": comparison.ci_low,
            "delta_ci_high": comparison.ci_high,
            "p_value": comparison.p_value,
            "mde": comparison.mde,
            "paired_seeds": len(comparison.seeds),
            "comparison": comparison,
        }
    compared = pd.DataFrame(rows, index=table.index)
    in_table = [table[k] for k in TABLE]
    compared["p_holm"] = compared.groupby(in_table)["p_value"].transform(
        lambda p: pd.Series(inference.holm(p.to_numpy()), index=p.index)
    )
    family = compared.groupby(in_table)["p_value"].transform("count")
    for index, row in compared.iterrows():
        if isinstance(row.get("comparison"), inference.Comparison):
            comparison = row["comparison"]  # detectable at Holm's strictest step, α / looks / comparisons in the table
            worst = comparison.alpha / max(int(family[index]), 1)
            compared.at[index, "mde"] = inference.minimum_detectable(comparison.sd, len(comparison.seeds), worst)
            margin = table.at[index, "margin"]
            scale = inference.DISPLAY_SCALE.get(table.at[index, "metric"], 1.0)
            raw_margin = None if pd.isna(margin) else margin / scale
            higher_is_better = table.at[index, "goal"] != "minimize"  # a target's scores are compared signed
            compared.at[index, "verdict"] = inference.verdict(
                row["comparison"], row["p_holm"], raw_margin, higher_is_better
            )
    if "baseline_key" not in compared:
        compared["baseline_key"] = None
    return pd.concat([table, compared.drop(columns=["comparison"], errors="ignore")], axis=1)


def _compared(goal: metrics.Goal, seed_means: pd.Series) -> pd.Series:
    """The per-seed means a comparison pairs: as recorded for a direction (its Δ reads in the metric's units), signed
    for a target (:func:`metabench.metrics.signed`: its Δ is how much closer to the target)."""
    return seed_means if isinstance(goal, str) else metrics.signed(goal, seed_means)


def as_of(started: pd.Series) -> str:
    """When the tables speak for: the newest record's start, not the clock, so that rebuilding them from the same
    records writes the same bytes (a no-op ``tox -e bench`` leaves a clone clean)."""
    newest = started.dropna().max() if len(started) else None
    return f"the newest started {newest}" if isinstance(newest, str) else "none dated"


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


@dataclass(frozen=True)
class Shown:
    """A cell as every table shows it (Markdown, LaTeX, HTML): one ranking, bolding and verdict style."""

    score: str  # "62.31"
    ci: str  # "± 1.20"; "" with one seed
    bold: bool  # ranked first in its table
    delta: str  # "+2.31", "not tested: why", "" for a plain strategy
    delta_ci: str  # "[+0.80, +3.82]"
    verdict: str  # "better", ..., "undecided (2 seeds: detects ≥ 6.1)"


def shown(cell: Any, scale: float) -> Shown:
    """How ``cell`` (a row of :func:`aggregate`) reads in a table whose scores are multiplied by ``scale``."""
    ci = "" if pd.isna(cell.ci95) else f"± {cell.ci95 * scale:.2f}"
    delta = delta_ci = verdict = ""
    if cell.not_tested:
        delta = f"not tested: {cell.not_tested}"
    elif not pd.isna(cell.delta):
        delta = f"{cell.delta * scale:+.2f}"
        if not pd.isna(cell.delta_ci_low):
            delta_ci = f"[{cell.delta_ci_low * scale:+.2f}, {cell.delta_ci_high * scale:+.2f}]"
        verdict = cell.verdict
        if verdict == "equivalent":
            verdict = f"equivalent (within ±{cell.margin:g})"
        elif verdict == "undecided":
            verdict = f"undecided ({inference.why_undecided(int(cell.paired_seeds), cell.mde, scale)}"
            if cell.p_value < cell.alpha <= cell.p_holm:
                verdict += f"; p = {cell.p_value:.2g} is {cell.p_holm:.2g} after Holm"
            verdict += ")"
    return Shown(_number(cell.mean, scale), ci, cell.rank == 1, delta, delta_ci, verdict)


def verdict_caption(cells: pd.DataFrame) -> str:
    """What the CIs, Δs and verdicts of ``cells`` mean, in one paragraph (every table format prints it)."""
    looks = int(cells["looks"].max()) if len(cells) else 1
    level = (
        "95%"
        if looks == 1
        else f"1 − {inference.ALPHA:g}/{looks} (cells run until decided: {looks} planned looks, α split over them)"
    )
    return (
        "Score: mean over training seeds of each seed's mean over the fixed evaluation tasks (identical for every "
        "cell); CI: 95% t interval over the per-seed means (n − 1 df; none with one seed). Δ: against the same "
        "sampler, learner and config with the plain strategy, paired by training seed (the seeds both have), with its "
        f"{level} t interval. Verdict: better / worse when the paired t-test rejects Δ = 0 at α = {inference.ALPHA:g} "
        "after Holm's correction over the comparisons of the table; equivalent when the Δ interval lies inside "
        "±margin (two one-sided tests; margin from [benchmark] equivalence_margin, default 1 accuracy point); "
        "undecided otherwise, with the Δ its seeds would detect at 80% power (at Holm's strictest level, α over the "
        "number of comparisons). Best mean in bold."
    )


def _markdown_table(cells: pd.DataFrame) -> str:
    scale, unit = metric_display(cells)
    rows = []
    for cell in cells.itertuples():
        show = shown(cell, scale)
        notes = ["stale"] if cell.stale else []
        rows.append(
            [
                int(cell.rank),
                cell.sampler,
                cell.learner,
                cell.strategy,
                cell.variant,
                f"**{show.score}**" if show.bold else show.score,
                show.ci,
                cell.seeds,
                cell.rounds if cell.looks > 1 else "",
                show.delta,
                show.delta_ci,
                "" if pd.isna(cell.p_value) else f"{cell.p_value:.3g}",
                show.verdict,
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
        "95% CI",
        "seeds",
        "rounds",
        "Δ vs plain",
        "Δ CI",
        "p",
        "verdict",
        "plain",
        "steps/s",
        "device",
        "note",
    ]
    # columns that would be empty on every row (no variants, no rounds, nothing stale) are left out
    optional = ("config", "rounds", "note")
    keep = [i for i, header in enumerate(headers) if header not in optional or any(r[i] for r in rows)]
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
    if (runs["status"] == "ok").all():
        return ""
    lines = []
    for run in (
        runs[runs["status"] != "ok"].sort_values(["status", "sampler", "learner", "strategy", "seed"]).itertuples()
    ):
        lines.append(f"- **{run.status}** {run.sampler}/{run.learner}/{run.strategy} seed {run.seed}: {run.error}")
    return "\n".join(lines)


def title_parts(profile: str, overrides: str) -> list[str]:
    """What a table's title says after its benchmark: its profile and its ``--set`` overrides (every format)."""
    return ([] if profile == "-" else [f"profile {profile}"]) + ([overrides] if overrides else [])


_SHAPE = ("protocol.n_way", "protocol.k_shot", "protocol.k_query")
_SCALE = ("training.meta_steps", "training.meta_batch", "backbone.name", "protocol.eval_tasks")


def scale_text(runs: pd.DataFrame) -> str:
    """The training scale of a table's records in one line, from their configs; a key whose value differs between
    rows is named instead (its values are in the rows' config column). ``""`` when the records say nothing."""
    flats = list(runs["config_flat"])
    backbone = sorted({k for flat in flats for k in flat if k.startswith("backbone.params.")})
    values: dict[str, str] = {}
    differ = []
    for key in (*_SHAPE, *_SCALE, *backbone):
        seen = {v if isinstance(v := flat[key], str) else _value(v) for flat in flats if key in flat}
        if len(seen) == 1:
            values[key] = seen.pop()
        elif seen:
            differ.append(key)
    parts = []
    if all(k in values for k in _SHAPE):
        n, k, q = (values[key] for key in _SHAPE)
        classes = set(runs["metric"]) == {"accuracy"}
        parts.append(f"{n}-way {k}-shot, {q} queries per class" if classes else f"{k} support, {q} query points")
    if "training.meta_steps" in values and "training.meta_batch" in values:
        parts.append(f"{values['training.meta_steps']} meta-steps × {values['training.meta_batch']} tasks")
    if "backbone.name" in values:
        widths = ", ".join(f"{k.removeprefix('backbone.params.')}={values[k]}" for k in backbone if k in values)
        parts.append(f"backbone {values['backbone.name']}" + (f" ({widths})" if widths else ""))
    if "protocol.eval_tasks" in values:
        parts.append(f"{values['protocol.eval_tasks']} evaluation tasks")
    if differ:
        parts.append(f"differing between rows: {', '.join(differ)}")
    return f"Scale: {'; '.join(parts)}." if parts else ""


def render_markdown(runs: pd.DataFrame, cells: pd.DataFrame, first: str | None = None) -> str:
    """The whole ``LEADERBOARD.md``: header, then per table (benchmark ``first`` first) its scale, its rows,
    unfinished cells and analyses."""

    def listing(column: str) -> str:
        return ", ".join(sorted({str(v) for v in runs[column].dropna()})) or "-"

    parts = [
        "# metabench leaderboard",
        "",
        f"{len(runs)} run records, {as_of(runs['started_at'])} · commit {listing('commit')}"
        f" · device {listing('device')} · profile {listing('profile')}",
        "",
        verdict_caption(cells) + " A row is one config: runs of different configs are never averaged, and rows "
        "sharing a label show the keys that differ (config). stale: recorded by other code than the one installed now "
        "(kept with --reuse-stale); a record that `metabench verify` replayed bit-identically under the installed code "
        "is fresh (verified by replay of its first meta-steps).",
    ]
    for (benchmark, profile, overrides), group in table_groups(runs, first):
        named = [
            part.replace(f"profile {profile}", f"profile `{profile}`", 1) for part in title_parts(profile, overrides)
        ]
        parts += ["", f"## {benchmark}" + (f" ({', '.join(named)})" if named else ""), ""]
        scale = scale_text(group)
        if scale:
            parts += [scale, ""]
        mine = cells
        if len(cells):
            mine = cells[
                (cells["benchmark"] == benchmark) & (cells["profile"] == profile) & (cells["overrides"] == overrides)
            ]
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


def write_leaderboard(
    out: Path, registry: Registry | None = None, *, plots: bool = True, first: str | None = None
) -> list[Path]:
    """Write ``LEADERBOARD.md``, ``leaderboard.csv`` and, with ``plots``, ``leaderboard.png`` and the per-run plots
    under ``out``.

    With ``registry``, records made by other code than the installed one are marked stale; benchmark ``first`` (one
    of the records', see :func:`check_first`) leads every file. The caller fires
    ``metabench_leaderboard_written`` (the leaderboard does not run anything)."""
    stored = results.read_records(out)
    records = [record for _, record in stored]
    runs = runs_frame(records, registry)
    check_first(first, runs["benchmark"] if len(runs) else ())
    cells = aggregate(runs) if len(runs) else pd.DataFrame()
    cells = table_order(cells, first) if len(cells) else cells
    paths = [out / "LEADERBOARD.md", out / "leaderboard.csv"]
    text = render_markdown(runs, cells, first) if len(runs) else "# metabench leaderboard\n\nNo runs yet.\n"
    results.atomic_write(paths[0], lambda handle: handle.write(text))
    csv_columns = [c for c in cells.columns if c not in ("plot_hash", "config_key", "baseline_key")]
    table = cells[csv_columns] if len(cells) else cells
    results.atomic_write(paths[1], lambda handle: table.to_csv(handle, index=False))
    if not plots:
        return paths
    if len(cells):
        paths.append(out / "leaderboard.png")
        plot_cells(cells, paths[-1])  # panels in the cells' table order
    for path, record in stored:
        plot = out / "plots" / f"{record['config_hash']}.png"
        if record["status"] == "ok" and record.get("curves") and not _plot_is_current(plot, path):
            plot_run(record, plot)
            paths.append(plot)
    return paths
