"""How often the leaderboard's verdicts are wrong: A/A and power on synthetic records, sequential runs, and the
committed records.

Usage: python benchmarks/calibrate.py [--benchmarks 200] [--records results]

Synthetic benchmarks: two strategies (``query``, the plain one, and ``metamix``) of one config, drawn from one
generating process. Each evaluation task has a difficulty shared by every seed and both strategies; each (strategy,
seed) has its own training-seed offset (SD = the seed spread, 1 or 3 accuracy points, independent draws for the two
strategies); each (strategy, seed, task) has its own noise. ``metamix`` is shifted by the true Δ (0 for A/A). The
records are written in the real schema under a temporary folder and read back through the public leaderboard path
(:func:`metabench.leaderboard.write_leaderboard`, then ``leaderboard.csv``), one synthetic benchmark per table.

- A/A: the share of ``better`` / ``worse`` verdicts when both strategies are the same process (nominal: 5%);
- power: the share of ``better`` when ``metamix`` is truly +3 points;
- sequential: the same, run until decided (``metabench.sequential`` with a synthetic executor);
- committed: two seeds of one committed config compared as if they were two configs (``--records``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from metabench import inference, leaderboard, results, schema, sequential
from metabench.cache import stable_hash
from metabench.runner import RunOptions
from metabench.runspec import ComponentRef, EvalProtocol, RunSpec

TASKS = 100
BASE, TASK_SD, NOISE_SD = 0.6, 0.10, 0.05  # accuracy: mean, task difficulty SD, per-(seed, task) noise SD
STRATEGIES = {"query": True, "metamix": False}  # name: plain


@dataclass(frozen=True)
class Scenario:
    """One kind of synthetic benchmark: seeds per cell, seed spread and true Δ (accuracy points)."""

    seeds: int
    spread: float
    delta: float = 0.0
    max_seeds: int | None = None  # run until decided up to this many seeds

    @property
    def name(self) -> str:
        until = f"-until{self.max_seeds}" if self.max_seeds else ""
        return f"s{self.seeds}-sd{self.spread:g}-d{self.delta:g}{until}"


def spec(benchmark: str, strategy: str, seed: int) -> RunSpec:
    return RunSpec(
        benchmark,
        ComponentRef.of("omniglot"),
        ComponentRef.of("standard"),
        ComponentRef.of("maml"),
        ComponentRef.of(strategy),
        ComponentRef.of("conv4"),
        EvalProtocol(eval_tasks=TASKS),
        seed=seed,
    )


def synthetic_record(run: RunSpec, delta: float, spread: float) -> dict[str, Any]:
    """The record of ``run`` drawn from the scenario's process; the same (benchmark, strategy, seed) always gives the
    same scores, so a run added in a later round is the run it would have been in the first."""
    tasks = np.random.default_rng(int(stable_hash([run.benchmark, "tasks"]), 16) % 2**63)
    own = np.random.default_rng(int(stable_hash([run.benchmark, run.strategy.name, run.seed]), 16) % 2**63)
    shift = 0.0 if STRATEGIES[run.strategy.name] else delta / 100
    per_task = (
        BASE + shift + tasks.normal(0, TASK_SD, TASKS) + own.normal(0, spread / 100) + own.normal(0, NOISE_SD, TASKS)
    )
    return schema.new(
        run,
        provenance={"device_type": "cpu"},
        code_hash="synthetic",
        environment={"device_name": "synthetic", "commit": None},
        started_at="2026-01-01T00:00:00+00:00",
        wall_seconds=0.0,
        status="ok",
        error=None,
        facts={"strategy_plain": STRATEGIES[run.strategy.name], "tasks_hash": f"{run.benchmark}-tasks"},
        outcome={
            "metric": {"name": "accuracy", "higher_is_better": True},
            "metrics": {"test": {"mean": float(per_task.mean()), "per_task": [round(float(s), 6) for s in per_task]}},
        },
    )


class SyntheticExecutor:
    """An executor (the :class:`metabench.executor.Executor` protocol) that draws each run's record instead of
    training: what ``metabench run --until-decided`` calls between its rounds."""

    def __init__(self, scenarios: dict[str, Scenario]):
        self.scenarios = scenarios  # benchmark name -> its scenario

    def run(self, specs: list[RunSpec], options: RunOptions) -> list[dict[str, Any]]:
        records = []
        for run in specs:
            scenario = self.scenarios[run.benchmark]
            record = synthetic_record(run, scenario.delta, scenario.spread)
            results.write_record(options.out, run, record)
            records.append(record)
        return records


def write_benchmarks(out: Path, scenarios: list[Scenario], count: int) -> None:
    """``count`` synthetic benchmarks per scenario under ``out/runs`` (sequential ones run through their rounds)."""
    options = RunOptions(out, progress=False)
    by_name = {f"{s.name}-{i:04d}": s for s in scenarios for i in range(count)}
    executor = SyntheticExecutor(by_name)
    fixed = [
        spec(name, strategy, seed)
        for name, s in by_name.items()
        if not s.max_seeds
        for strategy in STRATEGIES
        for seed in range(s.seeds)
    ]
    executor.run(fixed, options)
    for s in {s for s in scenarios if s.max_seeds}:
        grid = [
            spec(name, strategy, seed)
            for name, of in by_name.items()
            if of == s
            for strategy in STRATEGIES
            for seed in range(s.seeds)
        ]
        sequential.run_until_decided(sequential.planned(grid, s.max_seeds), options, executor, echo=lambda _: None)


def verdict_rates(out: Path) -> pd.DataFrame:
    """Per scenario: how many benchmarks, and the share of each verdict, read through the leaderboard's CSV."""
    leaderboard.write_leaderboard(out, plots=False)
    table = pd.read_csv(out / "leaderboard.csv")
    compared = table[table["strategy"] == "metamix"].copy()
    compared["scenario"] = compared["benchmark"].str.rsplit("-", n=1).str[0]
    rates = pd.crosstab(compared["scenario"], compared["verdict"], normalize="index")
    rates = rates.reindex(columns=list(inference.VERDICTS), fill_value=0.0)
    rates["benchmarks"] = compared.groupby("scenario").size()
    rates["mean seeds"] = compared.groupby("scenario")["paired_seeds"].mean()
    return rates


def committed_aa(records_dir: Path) -> tuple[int, int, int, float]:
    """Two seeds of one committed config compared as if different configs, both ways: pairs, false verdicts of the
    leaderboard's test (paired over seeds needs two seeds per side, so each side is one seed: always undecided,
    the point being that it cannot be fooled), and of the old test (paired t-test over the shared tasks)."""
    from scipy import stats

    frame = leaderboard.runs_frame(results.load_records(records_dir))
    ok = frame[frame["status"] == "ok"]
    pairs = over_tasks = 0
    seed_sd: list[float] = []
    for _, cell in ok.groupby(["benchmark", "profile", "config_key", "tasks_hash"]):
        cell = cell.sort_values("seed")
        scores = [np.asarray(p, dtype=np.float64) for p in cell["per_task"]]
        if len(scores) > 1:
            seed_sd.append(float(np.std(cell["mean"].astype(float), ddof=1)))
        for i in range(len(scores)):
            for j in range(i + 1, len(scores)):
                pairs += 1
                over_tasks += bool(stats.ttest_rel(scores[i], scores[j]).pvalue < inference.ALPHA)
    return pairs, over_tasks, len(seed_sd), 100 * float(np.median(seed_sd)) if seed_sd else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", type=int, default=200, help="synthetic benchmarks per scenario")
    parser.add_argument("--records", type=Path, default=Path("results"), help="committed results folder")
    args = parser.parse_args(argv)
    scenarios = [Scenario(n, spread) for spread in (1.0, 3.0) for n in (2, 3, 5, 10)]
    scenarios += [Scenario(n, 1.0, 3.0) for n in (2, 3, 5, 10)] + [Scenario(3, 3.0, 3.0), Scenario(5, 3.0, 3.0)]
    scenarios += [Scenario(3, spread, 0.0, 10) for spread in (1.0, 3.0)] + [Scenario(3, 3.0, 3.0, 10)]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        write_benchmarks(Path(tmp), scenarios, args.benchmarks)
        rates = verdict_rates(Path(tmp))
    rows = []
    for s in scenarios:
        row = rates.loc[s.name]
        wrong = row["better"] + row["worse"] if s.delta == 0 else row["worse"]
        se = np.sqrt(max(wrong * (1 - wrong), 1e-12) / row["benchmarks"])
        rows.append(
            [
                f"until decided, ≤ {s.max_seeds}" if s.max_seeds else "fixed",
                s.seeds,
                f"{s.spread:g}",
                f"{s.delta:+g}",
                int(row["benchmarks"]),
                f"{row['mean seeds']:.1f}",
                f"{100 * wrong:.1f} ± {100 * se:.1f}",
                "" if s.delta == 0 else f"{100 * row['better']:.1f}",
                f"{100 * row['equivalent']:.1f}",
                f"{100 * row['undecided']:.1f}",
            ]
        )
    headers = ["design", "seeds", "seed SD", "true Δ", "benchmarks", "mean seeds", "false % (± SE)", "power %"]
    headers += ["equivalent %", "undecided %"]
    print(tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True))
    print(
        "\nfalse %: better or worse when Δ = 0 (A/A; nominal 5), worse when Δ > 0; power %: better when Δ = +3. "
        f"{TASKS} tasks, task SD {100 * TASK_SD:g}, per-task noise SD {100 * NOISE_SD:g} points. "
        f"{time.perf_counter() - started:.0f} s."
    )
    if (args.records / "runs").is_dir():
        pairs, over_tasks, cells, median_sd = committed_aa(args.records)
        print(
            f"\ncommitted records under {args.records}: {pairs} pairs of two seeds of one config; the old paired "
            f"t-test over tasks calls {over_tasks} ({100 * over_tasks / max(pairs, 1):.0f}%) of them different at "
            f"p < {inference.ALPHA:g}. The seed test needs two seeds per side, so a one-seed A/A pair is undecided. "
            f"Median seed SD of the {cells} cells with two or more seeds: {median_sd:.2f} points "
            "(accuracy; other metrics as recorded)."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
