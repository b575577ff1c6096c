"""Executors run a list of :class:`RunSpec` and return their records, running only what :func:`metabench.plan.pending`
says (no record, stale, or failed under ``--retry-failed``; everything under ``--rerun``).

The contract is small so that another executor (e.g. :class:`metabench.ray_executor.RayExecutor`, shipping runs to a
cluster) can replace the in-process one without touching config, runner, results or leaderboard: specs and options
in, JSON records out. ``runner.run`` returns a record; the executor, on the driver, hands it to :func:`finish`, which
writes it to ``options.out``, removes the run's checkpoint and fires ``metabench_run_finished``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from tqdm.auto import tqdm

from metabench import plan, results, runner
from metabench.registry import Registry, default_registry
from metabench.runner import RunOptions
from metabench.runspec import RunSpec


class Executor(Protocol):
    def run(self, specs: Sequence[RunSpec], options: RunOptions) -> list[dict[str, Any]]:
        """Run the specs :func:`metabench.plan.pending` selects; return the records of all ``specs``."""
        ...


def finish(registry: Registry, options: RunOptions, spec: RunSpec, record: dict[str, Any]) -> None:
    """On the driver, once per run: write its record, drop its checkpoint, fire ``metabench_run_finished``."""
    results.write_record(options.out, spec, record)
    results.remove_checkpoint(options.checkpoints, spec)
    registry.fire("metabench_run_finished", spec=spec, record=record, options=options)


def recorded(specs: Sequence[RunSpec], options: RunOptions) -> list[dict[str, Any]]:
    """The records of ``specs`` under ``options.out``; a run without one (interrupted, lost) is left out."""
    return [record for spec in specs if (record := results.load_record(options.out, spec)) is not None]


class SequentialExecutor:
    """Runs one spec after the other in this process, with an overall progress bar."""

    def __init__(self, registry: Registry | None = None):
        self.registry = registry or default_registry()

    def run(self, specs: Sequence[RunSpec], options: RunOptions) -> list[dict[str, Any]]:
        todo = plan.pending(specs, options, self.registry)
        done = len(specs) - len(todo)
        with tqdm(total=len(specs), initial=done, desc="runs", unit="run", disable=not options.progress) as bar:
            for spec in todo:
                bar.set_postfix_str(spec.label)
                record = runner.run(spec, self.registry, options)
                finish(self.registry, options, spec, record)
                bar.update()
                if record["status"] == "failed":
                    bar.write(f"{spec.label} failed: {record['error']}")
        return recorded(specs, options)
