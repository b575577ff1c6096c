"""Wall time of N small runs, one after the other in this process vs on a local Ray with 2 workers.

Each run is MAML on sinusoid regression (a 2x40 MLP, one torch thread), seeds 0..N-1 of one grid cell, so that both
executors do the same work. The Ray figures come without and with Ray's start-up (``ray.init`` on 127.0.0.1, no
dashboard), which a grid pays once. Target on a 2-core machine: at least 1.7x (runs only). Other jobs on the machine
slow both sides unevenly: the load average is printed before and after.

    python benchmarks/bench_executor.py [--runs 8] [--steps 500] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from metabench import config
from metabench.executor import SequentialExecutor
from metabench.ray_executor import RayExecutor, RayOptions
from metabench.registry import default_registry
from metabench.runner import RunOptions

GRID = """
[benchmark]
name = "bench-executor"

[dataset]
name = "sinusoid"

[backbone]
name = "mlp"

[protocol]
k_shot = 10
k_query = 10
eval_tasks = 100
val_tasks = 20

[training]
meta_steps = {steps}
meta_batch = 8
validate_every = {steps}
checkpoint_every = {steps}

[grid]
samplers = ["standard"]
learners = ["maml"]
strategies = ["query"]
seeds = {seeds}
"""


def load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8, help="runs (seeds of one grid cell)")
    parser.add_argument("--steps", type=int, default=500, help="meta-steps per run")
    parser.add_argument("--workers", type=int, default=2, help="Ray runs at once (one CPU each)")
    args = parser.parse_args()

    registry = default_registry()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        grid = root / "grid.toml"
        grid.write_text(GRID.format(steps=args.steps, seeds=list(range(args.runs))))
        specs = config.load_benchmark(grid, registry)
        print(f"{len(specs)} runs of {args.steps} MAML meta-steps on sinusoid; {os.cpu_count()} CPUs")
        print(f"load average (1/5/15 min) before: {load()}")

        started = time.perf_counter()
        sequential = SequentialExecutor(registry).run(specs, RunOptions(root / "sequential", "cpu", 1, False))
        sequential_s = time.perf_counter() - started

        executor = RayExecutor(RayOptions(max_parallel=args.workers))
        started = time.perf_counter()
        started_here = executor.connect()
        startup_s = time.perf_counter() - started
        print(f"Ray: {executor.ray.get_runtime_context().gcs_address}")
        try:
            started = time.perf_counter()
            distributed = executor.run(specs, RunOptions(root / "ray", "cpu", 1, False))
            ray_s = time.perf_counter() - started
        finally:
            if started_here:
                executor.ray.shutdown()
        print(f"load average (1/5/15 min) after:  {load()}")

    same = [a["metrics"] == b["metrics"] for a, b in zip(sequential, distributed, strict=True)]
    for name, records in (("sequential", sequential), ("ray", distributed)):
        seconds = statistics.median(r["wall_seconds"] for r in records)
        speed = statistics.median(r["steps_per_s"] for r in records)
        print(f"{name}: median run {seconds:.2f} s, {speed:.0f} meta-steps/s")
    print(f"sequential:           {sequential_s:7.1f} s")
    print(f"ray, {args.workers} workers:       {ray_s:7.1f} s   speed-up {sequential_s / ray_s:.2f}x (target >= 1.7x)")
    print(f"ray incl. start-up:   {ray_s + startup_s:7.1f} s   speed-up {sequential_s / (ray_s + startup_s):.2f}x")
    print(f"ray start-up:         {startup_s:7.1f} s")
    print(f"same metrics as sequential: {sum(same)}/{len(same)} runs")


if __name__ == "__main__":
    main()
