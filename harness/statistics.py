"""The statistics every report shares: summaries with 95% CIs, per-task scores over seeds, paired tests.

The leaderboard and the reproduction scripts in ``benchmarks/`` compute their figures here, so that a Δ or a CI means
the same thing wherever it is printed. Plain numpy/scipy: nothing here needs torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

Z_95 = 1.96
SIGNIFICANCE = 0.05


def summarize(scores: Sequence[float] | np.ndarray | Any) -> dict[str, float]:
    """Mean, sample standard deviation and the normal-approximation 95% CI half-width ``1.96·std/√n``.

    ``scores`` may be a CPU tensor: anything ``np.asarray`` reads."""
    values = np.asarray(scores.cpu() if hasattr(scores, "cpu") else scores, dtype=np.float64)
    n = values.size
    std = float(values.std(ddof=1)) if n > 1 else 0.0
    return {"mean": float(values.mean()), "std": std, "ci95": Z_95 * std / math.sqrt(n), "n": n}


def paired_test(a: Iterable[float], b: Iterable[float]) -> tuple[float, float]:
    """Mean difference ``a − b`` over paired scores and the two-sided paired t-test's p-value (1 when identical)."""
    a, b = np.asarray(list(a), dtype=np.float64), np.asarray(list(b), dtype=np.float64)
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"paired scores must have the same length >= 2, got {a.size} and {b.size}")
    difference = a - b
    if np.allclose(difference, difference[0]):  # no variance: the t statistic is undefined
        return float(difference.mean()), 1.0 if difference[0] == 0 else 0.0
    return float(difference.mean()), float(stats.ttest_rel(a, b).pvalue)


def task_scores(runs: pd.DataFrame, seeds: Iterable[int]) -> np.ndarray:
    """Per-task scores of the runs of one cell (one config, one set of evaluation tasks) averaged over ``seeds``."""
    chosen = runs[runs["seed"].isin(list(seeds))].sort_values("seed")
    return np.mean(np.stack([np.asarray(s, dtype=np.float64) for s in chosen["per_task"]]), axis=0)


def versus(mine: pd.DataFrame, other: pd.DataFrame) -> tuple[float, float] | str:
    """Δ and paired p of cell ``mine`` against cell ``other`` (runs frames, one cell each) on the seeds both have.

    A paired test needs the same evaluation tasks: when the cells' task hashes differ (or they share no seed) the
    answer is the reason they are not compared, not a number."""
    hashes = set(mine["tasks_hash"]) | set(other["tasks_hash"])
    if len(hashes) != 1 or None in hashes:
        return "evaluated on different tasks"
    seeds = sorted(set(mine["seed"]) & set(other["seed"]))
    if not seeds:
        return "no seed in common"
    return paired_test(task_scores(mine, seeds), task_scores(other, seeds))
