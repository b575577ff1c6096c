"""Executors run a list of :class:`RunSpec` and return their records, running only what :func:`metabench.plan.pending`
says (no record, stale, or failed under ``--retry-failed``; everything under ``--rerun``).

The contract is small so that another executor (e.g. one shipping runs to a cluster) can replace the in-process one
without touching config, runner, results or leaderboard: specs and options in, JSON records out. ``runner.run``
returns a record; the executor, on the driver, writes it to ``options.out``, removes the run's checkpoint and fires
``metabench_run_finished``.
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


class SequentialExecutor:
    """Runs one spec after the other in this process, with an overall progress bar."""

    def __init__(self, registry: Registry | None = None):
        self.registry = registry or default_registry()

    def run(self, specs: Sequence[RunSpec], options: RunOptions) -> list[dict[str, Any]]:
        pending = plan.pending(specs, options, self.registry)
        done = len(specs) - len(pending)
        with tqdm(total=len(specs), initial=done, desc="runs", unit="run", disable=not options.progress) as bar:
            for spec in pending:
                bar.set_postfix_str(spec.label)
                record = runner.run(spec, self.registry, options)
                results.write_record(options.out, spec, record)
                results.remove_checkpoint(options.out, spec)
                self.registry.fire("metabench_run_finished", spec=spec, record=record, options=options)
                bar.update()
                if record["status"] == "failed":
                    bar.write(f"{spec.label} failed: {record['error']}")
        return [record for spec in specs if (record := results.load_record(options.out, spec)) is not None]
