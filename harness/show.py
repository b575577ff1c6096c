"""``metabench show RUN``: one run's record in words — config, provenance, metrics with CIs, diagnostics, the cell it
belongs to (its config over every recorded seed, summarized by :mod:`metabench.inference`) — and its curve plot, found
by a config-hash prefix or a label glob, either after ``BENCHMARK:`` (a glob too)."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

from tabulate import tabulate

from metabench import config, inference, leaderboard, results
from metabench.cache import stable_hash
from metabench.errors import MetabenchError
from metabench.runspec import RunSpec

# what the record says about where and how the run happened, beyond its config
PROVENANCE_KEYS = ("status", "error", "started_at", "wall_seconds", "seeds", "environment", "provenance")


def find(out: Path, pattern: str) -> dict[str, Any]:
    """The one record under ``out`` whose config hash starts with ``pattern`` or whose label matches the glob
    ``pattern`` (as ``--only`` matches), optionally after a benchmark glob and a colon (``omniglot-5w1s:*maml*``);
    none or several is a :class:`MetabenchError` that lists them."""
    records = results.load_records(out)
    if not records:
        raise MetabenchError(f"{out}: no run records under {out / 'runs'}; run a benchmark first (metabench run FILE)")
    benchmark, _, label = pattern.rpartition(":")
    in_benchmark = [r for r in records if fnmatch.fnmatchcase(r["config"]["benchmark"], benchmark or "*")]
    by_hash = {r["config_hash"]: r for r in in_benchmark}
    labelled = config.select([RunSpec.from_dict(r["config"]) for r in in_benchmark], label)
    matches = {h: r for h, r in by_hash.items() if h.startswith(label)}
    matches.update({s.config_hash: by_hash[s.config_hash] for s in labelled if s.config_hash in by_hash})
    if not matches:
        raise MetabenchError(
            f"show {pattern}: no run in {out} has a config hash starting with it or a label matching it; "
            f"{len(records)} runs there, e.g. {records[-1]['config_hash'][:10]} {records[-1]['label']}"
        )
    if len(matches) > 1:
        listing = "\n".join(
            f"  {h[:10]}  {r['config']['benchmark']}  {r['label']}  {r['status']}" for h, r in sorted(matches.items())
        )
        raise MetabenchError(f"show {pattern}: {len(matches)} runs match; give a longer prefix or pattern:\n{listing}")
    return next(iter(matches.values()))


def plot(out: Path, record: dict[str, Any]) -> Path | None:
    """Write the run's curve plot to ``out/plots/<hash>.png`` (the leaderboard's path); ``None`` without curves."""
    if not record.get("curves"):
        return None
    path = out / "plots" / f"{record['config_hash']}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    leaderboard.plot_run(record, path)
    return path


def cell_of(out: Path, record: dict[str, Any]) -> str:
    """The record's cell in words: the successful runs of its config on its evaluation tasks, every seed, summarized
    over seeds (the run's own CI is over its tasks, which one training seed shares)."""
    key = (stable_hash(leaderboard.cell_config(record["config"])), record.get("tasks_hash"))
    runs = [
        r
        for r in results.load_records(out)
        if r["status"] == "ok" and (stable_hash(leaderboard.cell_config(r["config"])), r.get("tasks_hash")) == key
    ]
    if not runs:
        return "cell: no successful run of this config"
    seeds = sorted(r["config"]["seed"] for r in runs)
    summary = inference.summarize_cell([r["metrics"]["test"]["mean"] for r in runs])
    ci = "no CI with one seed" if summary.n_seeds < 2 else f"± {summary.ci95:.4f} (95% t interval over seeds)"
    return f"cell (this config, seeds {', '.join(map(str, seeds))}): test mean {summary.mean:.4f} {ci}"


def render(record: dict[str, Any], plot_path: Path | None, cell: str = "") -> str:
    """The record as text: header, config (JSON), provenance, metrics with 95% CIs, diagnostics, its cell (``cell``,
    from :func:`cell_of`), plot path."""
    parts = [
        f"run {record['config_hash']}  {record['config']['benchmark']}  {record['label']}  [{record['status']}]",
        "",
        "config:",
        json.dumps(record["config"], indent=2),
        "",
        "provenance:",
        json.dumps({k: record[k] for k in PROVENANCE_KEYS if record.get(k) is not None}, indent=2, default=str),
    ]
    metrics = record.get("metrics") or {}
    if metrics:
        rows = [[name, s.get("mean"), s.get("ci95"), s.get("std"), s.get("n")] for name, s in metrics.items()]
        metric = (record.get("metric") or {}).get("name", "score")
        parts += ["", f"metrics ({metric}, this run: mean ± 95% CI over its evaluation tasks):"]
        parts.append(tabulate(rows, headers=["split", "mean", "± ci95", "std", "n"], floatfmt=".4f"))
    for title in ("diagnostics", "meta_overfitting"):
        if record.get(title):
            parts += ["", f"{title}:", json.dumps(record[title], indent=2)]
    if cell:
        parts += ["", cell]
    if record.get("best_step") is not None:
        parts += ["", f"training: {record.get('steps')} steps, best validation at step {record['best_step']}"]
    parts += ["", f"curve plot: {plot_path}" if plot_path else "curve plot: none (the run has no training curves)"]
    return "\n".join(parts)
