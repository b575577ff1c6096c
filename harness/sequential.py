"""``metabench run FILE --until-decided``: add training seeds in rounds to the cells of comparisons still undecided.

Round 1 runs the grid's seeds. After each round the comparisons are read exactly as the leaderboard reads them
(:func:`metabench.leaderboard.aggregate`); the cells of every ``undecided`` comparison (the strategy and its plain
baseline) get the next seeds, the same seeds for both so that they stay paired, until every comparison is decided or
its cells have ``max_seeds`` seeds. The seed counts per round double, capped at the maximum (3 -> 6 -> 10), so that
few looks are spent.

**Error rate.** Looking at the data after every round and stopping when a test rejects would inflate the error rate
(each look is another chance of a false verdict). The number of looks ``K`` is fixed before the first run (the
schedule), and every look tests at ``α / K`` (Holm over the table's comparisons inside each look). By the union
bound over looks, the probability of any false ``better`` / ``worse`` over the whole procedure is at most
``K · α / K = α``; the same holds for a false ``equivalent``, whose interval is made at level ``1 − α / K``. The split
is conservative (an O'Brien-Fleming boundary would spend less early), but it needs no assumption about how the looks
are correlated. ``tests/test_calibration.py`` and ``benchmarks/calibrate.py`` check it by simulation.

Every added seed is an ordinary run and record; the record keeps its round and the planned looks
(``config.analysis``, outside the config hash), which is how the leaderboard knows the level and the rounds a cell
took. A round is one call of the executor, so under ``--executor ray`` a round's runs go in parallel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from metabench import inference, leaderboard
from metabench.cache import stable_hash
from metabench.errors import MetabenchError
from metabench.executor import Executor, recorded
from metabench.runner import RunOptions
from metabench.runspec import RunSpec


def schedule(start: int, most: int) -> list[int]:
    """Seeds per cell at each look: ``start``, then doubling, capped at ``most`` (3, 10 -> [3, 6, 10])."""
    counts = [start]
    while counts[-1] < most:
        counts.append(min(most, 2 * counts[-1]))
    return counts


def seed_list(initial: Sequence[int], count: int) -> list[int]:
    """The first ``count`` seeds: the grid's, then the next unused integers above them."""
    seeds = list(dict.fromkeys(initial))
    candidate = max(seeds) + 1
    while len(seeds) < count:
        seeds.append(candidate)
        candidate += 1
    return seeds[:count]


def max_seeds(specs: Sequence[RunSpec], until_decided: bool, flag: int | None) -> int | None:
    """How many seeds a cell may reach (``None``: run the grid's seeds only), from ``--until-decided [--max-seeds N]``
    or the file's ``[grid] seeds = { until_decided = true, max = N }``."""
    from_file = specs[0].analysis.max_seeds if specs else None
    if flag is not None and not until_decided:
        raise MetabenchError(f"--max-seeds {flag}: only with --until-decided")
    if not until_decided and from_file is None:
        return None
    most = flag if flag is not None else from_file
    if most is None:
        raise MetabenchError(
            "--until-decided: give --max-seeds N, or set the file's [grid] seeds = { start = [...], "
            "until_decided = true, max = N }"
        )
    start = len({spec.seed for spec in specs})
    if most < start:
        raise MetabenchError(f"--max-seeds {most}: fewer than the grid's {start} seeds")
    return most


def planned(specs: Sequence[RunSpec], most: int) -> list[RunSpec]:
    """The grid's specs as round 1 of a run until decided with at most ``most`` seeds per cell."""
    looks = len(schedule(len({spec.seed for spec in specs}), most))
    return [_with(spec, spec.seed, round_=1, looks=looks, most=most) for spec in specs]


def _with(spec: RunSpec, seed: int, *, round_: int, looks: int, most: int) -> RunSpec:
    analysis = dataclasses.replace(spec.analysis, max_seeds=most, looks=looks, round=round_)
    return dataclasses.replace(spec, seed=seed, analysis=analysis)


def plan_text(specs: Sequence[RunSpec]) -> str:
    """The rounds' plan of :func:`planned` specs, for ``--dry-run``."""
    initial = sorted({spec.seed for spec in specs})
    counts = schedule(len(initial), specs[0].analysis.max_seeds or len(initial))
    cells = len(specs) // len(initial)
    seeds = seed_list(initial, counts[-1])
    lines = [
        f"run until decided: {len(counts)} planned look(s), each testing at α = {inference.ALPHA:g}/{len(counts)} "
        f"= {inference.ALPHA / len(counts):.4g} (Bonferroni over looks; Holm inside each)",
        f"  round 1: seeds {_span(seeds[: counts[0]])} for all {cells} cells ({len(specs)} runs)",
    ]
    for number, (before, after) in enumerate(zip(counts[:-1], counts[1:], strict=True), start=2):
        lines.append(
            f"  round {number}: seeds {_span(seeds[before:after])} for the cells of comparisons still undecided "
            f"(at most {cells * (after - before)} runs)"
        )
    return "\n".join(lines)


def _span(seeds: Sequence[int]) -> str:
    return f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])


def _cell_key(spec: RunSpec) -> str:
    return stable_hash(leaderboard.cell_config(spec.to_dict()))


def run_until_decided(
    specs: Sequence[RunSpec],
    options: RunOptions,
    executor: Executor,
    echo: Callable[[str], None] = print,
    pending: Callable[[list[RunSpec]], list[RunSpec]] = list,
) -> tuple[list[RunSpec], list[dict[str, Any]]]:
    """Run :func:`planned` ``specs`` round by round with ``executor``: the specs and the records of every round.
    ``pending`` picks what of a round must run (the benchmark plans it as a grid: recorded runs are read, not rerun)."""

    def run_round(round_specs: list[RunSpec]) -> list[dict[str, Any]]:
        todo = pending(round_specs)
        if todo:
            executor.run(todo, options)
        return recorded(round_specs, options)

    initial = sorted({spec.seed for spec in specs})
    looks = specs[0].analysis.looks
    counts = schedule(len(initial), specs[0].analysis.max_seeds or len(initial))
    seeds = seed_list(initial, counts[-1])
    templates = {_cell_key(spec): spec for spec in specs}
    ran = list(specs)
    records = run_round(ran)
    for number in range(2, len(counts) + 1):
        cells = leaderboard.aggregate(leaderboard.runs_frame(records))
        undecided = cells[cells["verdict"] == "undecided"] if len(cells) else cells
        if undecided.empty:
            echo(f"round {number - 1}: every comparison is decided")
            break
        keys = set(undecided["config_key"]) | set(undecided["baseline_key"])
        new_seeds = seeds[counts[number - 2] : counts[number - 1]]
        todo = [
            _with(template, seed, round_=number, looks=looks, most=counts[-1])
            for key, template in templates.items()
            if key in keys
            for seed in new_seeds
        ]
        echo(
            f"round {number}/{len(counts)}: {len(undecided)} comparison(s) undecided; seeds {_span(new_seeds)} for "
            f"{len(todo) // len(new_seeds)} cell(s), {len(todo)} runs"
        )
        ran += todo
        records = records + run_round(todo)
    return ran, records
