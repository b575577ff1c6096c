"""Executors run a list of :class:`RunSpec` and return their records. Which specs is decided once, on the driver,
by the plan (:func:`metabench.plan.to_run`: no record, stale, or failed under ``--retry-failed``; everything under
``--rerun``); an executor runs every spec it is given.

The contract is small so that another executor (e.g. :class:`metabench.ray_executor.RayExecutor`, shipping runs to a
cluster) can replace the in-process one without touching config, runner, results or leaderboard: specs and options
in, JSON records out. ``runner.run`` returns a record (its lifecycle hooks, ``metabench_run_finished`` included, fire
where it ran); the executor, on the driver, hands it to :func:`finish`, which writes it to ``options.out`` and removes
the run's checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from tqdm.auto import tqdm

from metabench import results, runner
from metabench.registry import Registry, default_registry
from metabench.runner import RunOptions
from metabench.runspec import RunSpec


class Executor(Protocol):
    def run(self, specs: Sequence[RunSpec], options: RunOptions) -> list[dict[str, Any]]:
        """Run every spec of ``specs``; return the records of those that have one now."""
        ...


def finish(options: RunOptions, spec: RunSpec, record: dict[str, Any]) -> None:
    """On the driver, once per run: write its record and drop its checkpoint."""
    results.write_record(options.out, spec, record)
    results.remove_checkpoint(options.checkpoints, spec)


def recorded(specs: Sequence[RunSpec], options: RunOptions) -> list[dict[str, Any]]:
    """The records of ``specs`` under ``options.out``; a run without one (interrupted, lost) is left out."""
    return [record for spec in specs if (record := results.load_record(options.out, spec)) is not None]


class SequentialExecutor:
    """Runs one spec after the other in this process, with an overall progress bar."""

    def __init__(self, registry: Registry | None = None):
        self.registry = registry or default_registry()

    def run(self, specs: Sequence[RunSpec], options: RunOptions) -> list[dict[str, Any]]:
        with tqdm(total=len(specs), desc="runs", unit="run", disable=not options.progress) as bar:
            for spec in specs:
                bar.set_postfix_str(spec.label)
                record = runner.run(spec, self.registry, options)
                finish(options, spec, record)
                bar.update()
                if record["status"] == "failed":
                    bar.write(f"{spec.label} failed: {record['error']}")
        return recorded(specs, options)
