"""The inference every report shares: what a cell is, what may be compared with what, and how a cell and a Δ are
summarized into a CI and a verdict. The leaderboard (Markdown, CSV, LaTeX, HTML), ``metabench reproductions``,
``metabench show``, ``metabench run --until-decided`` and the scripts in ``benchmarks/`` all read their figures here.

**A cell** is one config (everything but the training seed) evaluated on one set of evaluation tasks (one
``tasks_hash``). Records of different configs or different evaluation tasks are never averaged.

**The replicate is the training seed.** A seed fixes the initialisation and the stream of meta-training tasks; the
evaluation tasks are fixed by the benchmark and shared by every seed and every cell. Scores of one seed's evaluation
tasks are therefore not independent replicates of anything a reader wants to generalize over: a second training run
moves all of them together (the seed spread; ``benchmarks/calibrate.py`` measures it on the committed records, and
how far a test over tasks misreads it). So each seed is reduced to one number, its **per-seed mean** (the
mean over the shared evaluation tasks, which keeps the task-level noise inside it), and:

- a cell's CI is the t interval over its per-seed means, ``t(0.975, n-1) · sd / √n``; one seed has no CI;
- a Δ between two cells is the mean of the **per-seed differences**, pairing seed ``s`` of one cell with seed ``s``
  of the other (only the seeds both have; both cells on the same tasks). Pairing is valid because a seed gives both
  cells the same initialisation and the same task stream, so part of the seed effect is shared and cancels; its CI
  and p-value are the paired t-test's, with ``n-1`` degrees of freedom (never z: with 2-5 seeds z is far too narrow).

This is the simplest method that is exactly calibrated when per-seed means are roughly normal, which the mean over
hundreds of tasks makes them; ``tests/test_calibration.py`` proves the false-verdict rate through the leaderboard on
synthetic records. Pooling the between-seed variance over the cells of a benchmark (a mixed model) would give more
degrees of freedom but assumes every cell has the same seed spread, which nothing guarantees (a strategy can make
training more or less stable), and its calibration would rest on that assumption, so it is not done. The CIs are
conditional on the benchmark's fixed evaluation tasks: they say what another training seed would give on these tasks.

**A verdict** per comparison: ``better`` / ``worse`` when the paired test rejects Δ = 0 at the family's level (Holm's
step-down correction over the comparisons of one leaderboard table); ``equivalent`` when the Δ CI lies inside
±margin (two one-sided tests, each at half the CI's level); otherwise ``undecided``, with the minimum detectable Δ at
80% power for the seeds it has. A comparison run until decided over ``K`` planned looks tests each look at
``α / K`` (Bonferroni over looks), so the whole sequential procedure keeps its error rate at ``α``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05
POWER = 0.8
VERDICTS = ("better", "worse", "equivalent", "undecided")
DISPLAY_SCALE = {"accuracy": 100.0}
"""Metrics shown in other units than recorded (accuracy in points); any other metric is shown as recorded."""
DEFAULT_MARGIN = {"accuracy": 1.0}
"""The equivalence margin, in display units, when the benchmark file sets none (``[benchmark] equivalence_margin``);
a metric without one has no ``equivalent`` verdict."""


@dataclass(frozen=True)
class CellSummary:
    mean: float  # mean of the per-seed means
    ci95: float  # half-width of the t interval over per-seed means; nan with one seed
    sd: float  # between-seed standard deviation of the per-seed means; nan with one seed
    n_seeds: int


@dataclass(frozen=True)
class Comparison:
    """``mine − baseline`` over the seeds both cells have, in the metric's recorded units."""

    delta: float
    ci_low: float  # at level 1 − alpha (nan with one paired seed)
    ci_high: float
    p_value: float  # two-sided paired t-test of Δ = 0 (nan with one paired seed)
    sd: float  # standard deviation of the per-seed differences
    seeds: tuple[int, ...]  # the paired seeds
    alpha: float  # the level the CI and the test were made at
    mde: float  # minimum detectable |Δ| at 80% power at ``alpha`` with these seeds and this sd


def summarize_cell(seed_means: Sequence[float]) -> CellSummary:
    """A cell from its per-seed means: their mean and the 95% t interval's half-width (``n − 1`` df)."""
    values = np.asarray(seed_means, dtype=np.float64)
    n = values.size
    if n < 2:
        return CellSummary(float(values.mean()), math.nan, math.nan, n)
    sd = float(values.std(ddof=1))
    return CellSummary(float(values.mean()), float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n), sd, n)


def not_comparable(mine_tasks: set[str | None], baseline_tasks: set[str | None], seeds: set[int]) -> str:
    """Why two cells cannot be compared (``""`` when they can): a Δ pairs the same tasks and the same seeds."""
    hashes = mine_tasks | baseline_tasks
    if len(hashes) != 1 or None in hashes or "" in hashes:
        return "evaluated on different tasks"
    if not seeds:
        return "no seed in common"
    return ""


def minimum_detectable(sd: float, n: int, alpha: float, power: float = POWER) -> float:
    """The |Δ| a paired t-test at two-sided level ``alpha`` detects with probability ``power`` from ``n`` seeds whose
    differences have standard deviation ``sd`` (the usual ``(t_{1−α/2} + t_{power}) · sd / √n``, ``n − 1`` df)."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    df = n - 1
    return float(stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * sd / math.sqrt(n)


def compare(mine: Mapping[int, float], baseline: Mapping[int, float], alpha: float = ALPHA) -> Comparison:
    """Δ of per-seed means ``mine − baseline`` paired by seed (the seeds both have, at least one), its ``1 − alpha``
    t interval and the paired t-test's p-value."""
    seeds = tuple(sorted(set(mine) & set(baseline)))
    if not seeds:
        raise ValueError("compare: the cells share no seed; check not_comparable first")
    differences = np.array([mine[s] - baseline[s] for s in seeds], dtype=np.float64)
    n, delta = differences.size, float(differences.mean())
    if n < 2:
        return Comparison(delta, math.nan, math.nan, math.nan, math.nan, seeds, alpha, math.nan)
    sd = float(differences.std(ddof=1))
    half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * sd / math.sqrt(n)
    if sd == 0.0:  # every seed moved by the same amount: no spread to test against
        p_value = 1.0 if delta == 0 else 0.0
    else:
        p_value = float(2 * stats.t.sf(abs(delta) / (sd / math.sqrt(n)), n - 1))
    return Comparison(delta, delta - half, delta + half, p_value, sd, seeds, alpha, minimum_detectable(sd, n, alpha))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control, any dependence); nan stays nan and is not
    counted in the family."""
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m, running = len(order), 0.0
    for i, index in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[index]))
        adjusted[index] = running
    return adjusted


def verdict(comparison: Comparison, p_adjusted: float, margin: float | None, higher_is_better: bool) -> str:
    """``better`` / ``worse`` (Δ ≠ 0 at the comparison's level after the family's correction, in the direction the
    metric prefers), ``equivalent`` (the CI inside ±``margin``, recorded units), else ``undecided``."""
    if len(comparison.seeds) < 2:
        return "undecided"
    if p_adjusted < comparison.alpha:
        return "better" if (comparison.delta > 0) == higher_is_better else "worse"
    if margin is not None and -margin <= comparison.ci_low and comparison.ci_high <= margin:
        return "equivalent"
    return "undecided"


def why_undecided(seeds: int, mde: float, scale: float) -> str:
    """``2 seeds: detects ≥ 6.1`` (display units): what the seeds run can and cannot tell apart."""
    if seeds < 2:
        return f"{seeds} seed: needs ≥ 2 to measure the seed spread"
    return f"{seeds} seeds: detects ≥ {mde * scale:.1f}"


def seeds_to_detect(sd: float, effect: float, alpha: float, power: float = POWER, most: int = 1000) -> int | None:
    """The fewest seeds that detect ``|effect|`` at ``power`` given the per-seed difference sd (``None``: over
    ``most``, or unknown)."""
    if not (math.isfinite(sd) and math.isfinite(effect)) or effect == 0:
        return None
    for n in range(2, most + 1):
        if minimum_detectable(sd, n, alpha, power) <= abs(effect):
            return n
    return None


def seeds_to_bound(sd: float, half_width: float, alpha: float, most: int = 1000) -> int | None:
    """The fewest seeds whose ``1 − alpha`` interval of a Δ with per-seed difference sd is at most ``half_width``
    wide on each side (``None``: over ``most``, or unknown)."""
    if not (math.isfinite(sd) and half_width > 0):
        return None
    for n in range(2, most + 1):
        if stats.t.ppf(1 - alpha / 2, n - 1) * sd / math.sqrt(n) <= half_width:
            return n
    return None


def compare_cells(mine: pd.DataFrame, other: pd.DataFrame, alpha: float = ALPHA) -> Comparison | str:
    """:func:`compare` for two cells given as rows of the leaderboard's runs frame (``seed``, ``mean``,
    ``tasks_hash``, ``config_key``, successful runs only), or why they cannot be compared."""
    for frame in (mine, other):
        if frame.empty:
            return "no successful run"
        if frame["config_key"].nunique() != 1:
            return "records of several configs (never averaged)"
    reason = not_comparable(set(mine["tasks_hash"]), set(other["tasks_hash"]), set(mine["seed"]) & set(other["seed"]))
    if reason:
        return reason
    seed_means = [dict(zip(f["seed"], f["mean"].astype(float), strict=True)) for f in (mine, other)]
    return compare(*seed_means, alpha)
