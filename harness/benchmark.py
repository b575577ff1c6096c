"""One benchmark end to end: config -> plan -> preflight -> executor -> records -> leaderboard.

The ``metabench run`` command and the scripts in ``benchmarks/`` call :func:`run_benchmark`, so that they skip, rerun,
check and report exactly alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tabulate import tabulate

from metabench import config, leaderboard, plan, runner, sequential
from metabench.errors import MetabenchError
from metabench.executor import Executor, SequentialExecutor, recorded
from metabench.preflight import preflight
from metabench.registry import Registry, default_registry
from metabench.runner import RunOptions
from metabench.runspec import RunSpec


@dataclass
class BenchmarkRun:
    """What :func:`run_benchmark` did: the plan, the records of every selected spec, the leaderboard's files."""

    specs: list[RunSpec]
    planned: list[plan.Planned]
    records: list[dict[str, Any]] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    left_untrained: list[str] = field(default_factory=list)  # what the runs train first, uncached (preflight's)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] == "failed"]

    def counts(self) -> dict[str, int]:
        return {s: sum(r["status"] == s for r in self.records) for s in ("ok", "not-applicable", "failed")}


def run_benchmark(
    path: str | Path,
    *,
    registry: Registry | None = None,
    profile: str | None = None,
    only: str | None = None,
    overrides: Sequence[str] = (),
    options: RunOptions | None = None,
    selection: plan.Selection | None = None,
    executor: Executor | None = None,
    dry_run: bool = False,
    until_decided: bool = False,
    max_seeds: int | None = None,
    echo: Callable[[str], None] = print,
) -> BenchmarkRun:
    """Run the benchmark file at ``path`` (``--only`` pattern ``only``, ``--set`` ``overrides``) and write its
    leaderboard under ``options.out``; ``dry_run`` stops after the plan. The grid is planned once, here: ``selection``
    says which recorded runs run again, and the executor runs exactly the rest. With ``until_decided`` (or the file's
    ``[grid] seeds = { until_decided = true, max = N }``) the grid is round 1 of :mod:`metabench.sequential`, up to
    ``max_seeds`` seeds per cell. User errors raise :class:`MetabenchError`."""
    registry = registry or default_registry()
    options = options or RunOptions()
    selection = selection or plan.Selection()
    every_spec = config.load_benchmark(path, registry, profile=profile, overrides=overrides)
    specs = config.select(every_spec, only)
    if config.compile_key(path, registry, profile=profile, overrides=overrides):
        options = replace(options, compile=True)
    if not specs:
        raise MetabenchError(
            f"{path}: no run matches --only {only!r}; its {len(every_spec)} runs are labelled like "
            f"'{every_spec[0].label}' (--only is {config.SELECT_RULE})"
        )
    most = sequential.max_seeds(specs, until_decided, max_seeds)
    if most is not None:
        specs = sequential.planned(specs, most)
    if options.threads is not None and options.threads < 1:
        raise MetabenchError(f"--threads {options.threads}: must be >= 1")
    if executor is None:  # an executor chosen by the caller checks its own devices (workers may differ)
        runner.resolve_device(options.device)  # fail before the first run, not in each
    planned = plan.plan(specs, options, registry)
    outcome = BenchmarkRun(specs, planned)
    if not dry_run:
        echo(plan.summary(planned, selection))
    to_run = plan.to_run(planned, selection)
    if to_run:  # the dry run too: its plan must not promise runs that would fail in their first second
        source = " ".join([str(path), *(f"--set {text}" for text in overrides)])
        outcome.left_untrained = preflight(to_run, registry, options, source)
    if dry_run:
        return outcome
    executor = executor or SequentialExecutor(registry)
    if most is None:
        if to_run:
            executor.run(to_run, options)
        outcome.records = recorded(specs, options)
    else:
        outcome.specs, outcome.records = sequential.run_until_decided(
            specs, options, executor, echo, lambda round_: plan.to_run(plan.plan(round_, options, registry), selection)
        )
    # the benchmark just run leads the report: it is what the researcher is waiting for
    outcome.paths = leaderboard.write_leaderboard(options.out, registry, first=specs[0].benchmark)
    registry.fire("metabench_leaderboard_written", paths=outcome.paths)
    return outcome


def plan_table(planned: list[plan.Planned]) -> str:
    """The dry run's table: one row per run, with its status, estimated size and, for stale or failed runs, why."""
    rows = []
    for p in planned:
        spec = p.spec
        size = f"{spec.training.meta_steps} steps x {spec.training.meta_batch} tasks, {spec.protocol.eval_tasks} test"
        why = p.detail if len(p.detail) <= 80 else p.detail[:77] + "..."
        rows.append(
            [f"{spec.sampler.label}/{spec.learner.label}/{spec.strategy.label}", spec.seed, p.status, size, why]
        )
    return tabulate(rows, headers=["cell", "seed", "status", "estimated size", "why"], tablefmt="simple")


def failure_report(failed: list[dict[str, Any]], command: str) -> str:
    """The failed runs, one a line, and how to run them again."""
    lines = [f"{len(failed)} failed run{'s' if len(failed) > 1 else ''}:"]
    lines += [f"  {r['label']}: {r['error']}" for r in failed]
    lines.append(f"fix the cause, then run them again: {command} --retry-failed")
    return "\n".join(lines)
