"""How long the runs of a plan will train, from meta-steps timed here: the dry run's estimate.

A profile sized for a GPU (the `paper` profiles) is planned on the machine that will run it: ``metabench run FILE
--profile paper --device cuda --dry-run`` times a few meta-steps of each cell there (after one warm-up step, which pays
allocation and kernel selection) and multiplies by the cell's meta-steps. A cell with a record of the same config on
the same device type is not timed again: its measured steps/s is read from the record. Validation and the final
evaluation are not counted (they are a small part of a long run, and their share depends on ``validate_every``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from metabench import runner
from metabench.plan import Planned
from metabench.registry import Registry
from metabench.runspec import RunSpec
from metabench.seeds import make_generator

TIMED_STEPS = 3
TIME_BUDGET_S = 20.0


@dataclass(frozen=True)
class CellEstimate:
    cell: str  # sampler/learner/strategy
    runs: int
    meta_steps: int
    steps_per_s: float | None  # None: the learner does not meta-train
    source: str  # "timed here", "record <hash>", "no meta-training" or "not timed: <error>"

    @property
    def seconds(self) -> float:
        return 0.0 if self.steps_per_s is None else self.runs * self.meta_steps / self.steps_per_s


def estimate(planned: Sequence[Planned], registry: Registry, options: runner.RunOptions) -> list[CellEstimate]:
    """One estimate per cell (runs differing only by seed share it) of the ``to run`` entries of ``planned``."""
    device = runner.resolve_device(options.device)
    runner.prepare_cpu(device, options.threads)
    measured = _recorded_speeds(planned, device.type)
    cells: dict[str, list[RunSpec]] = {}
    for entry in planned:
        if entry.status != "recorded":
            spec = entry.spec
            cells.setdefault(f"{spec.sampler.label}/{spec.learner.label}/{spec.strategy.label}", []).append(spec)
    estimates = []
    for cell, specs in cells.items():
        spec = specs[0]
        known = measured.get(_cell_key(spec))
        if known is not None:
            speed, source = known
        else:
            try:
                speed = _time_step(spec, registry, device)
                source = "timed here" if speed is not None else "no meta-training"
            except Exception as error:  # noqa: BLE001 - a run that fails in its first steps is the run's to record
                speed, source = None, f"not timed: {type(error).__name__}: {error}"
        estimates.append(CellEstimate(cell, len(specs), spec.training.meta_steps, speed, source))
    return estimates


def report(estimates: Sequence[CellEstimate], options: runner.RunOptions) -> str:
    """The dry run's lines: each cell's steps/s and time, then the total."""
    device = runner.resolve_device(options.device)
    lines = [f"estimated meta-training time on {device} (validation and evaluation not counted):"]
    for e in estimates:
        speed = e.source if e.steps_per_s is None else f"{e.steps_per_s:.3g} steps/s ({e.source})"
        lines.append(f"  {e.cell}: {e.runs} x {e.meta_steps} steps, {speed}: {_duration(e.seconds)}")
    total = sum(e.seconds for e in estimates)
    lines.append(f"  total: {_duration(total)} one run at a time")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _cell_key(spec: RunSpec) -> str:
    """The config of ``spec`` without its seed: every seed of a cell trains at the same speed."""
    return replace(spec, seed=0).config_hash


def _recorded_speeds(planned: Sequence[Planned], device: str) -> dict[str, tuple[float, str]]:
    speeds: dict[str, tuple[float, str]] = {}
    for entry in planned:
        record = entry.record
        if not record or record.get("status") != "ok" or not record.get("steps_per_s"):
            continue
        if (record.get("provenance") or {}).get("device_type") != device:
            continue
        speeds.setdefault(_cell_key(entry.spec), (float(record["steps_per_s"]), f"record {record['config_hash']}"))
    return speeds


def _time_step(spec: RunSpec, registry: Registry, device: torch.device) -> float | None:
    """Steps/s of ``spec``'s meta-step on ``device`` (draw, meta-loss, backward)."""
    with torch.random.fork_rng(devices=[]):
        try:
            bound = runner.build(spec, registry, device, progress=False, facts={}, checking=True)
        except runner.NotApplicable:
            return None
        if not bound.learner.meta_trains:
            return None
        rng = make_generator(spec.seed, "estimate")
        times: list[float] = []
        # one warm-up step, then up to TIMED_STEPS (fewer past TIME_BUDGET_S: a paper-scale step on a CPU takes
        # seconds); the median, since a shared machine slows some steps
        while len(times) < TIMED_STEPS + 1 and sum(times[1:]) < TIME_BUDGET_S:
            started = time.perf_counter()
            tasks = bound.train_source(spec.training.meta_batch, rng)
            loss, _ = bound.learner.meta_loss(bound.params, tasks, bound.strategy, rng)
            loss.backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - started)
            for p in bound.params.values():
                p.grad = None
    return 1.0 / statistics.median(times[1:])
