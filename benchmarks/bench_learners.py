"""Meta-training speed of MAML with conv4 on Omniglot-shaped tasks: the vmapped path vs the per-task loop.

One meta-step = inner loop on every task's support set, outer loss on the queries, backward, Adam step.
Each (configuration, path) runs in a fresh process so that its peak memory is its own: on CPU the peak resident set
above the process's size before the first step, on CUDA ``torch.cuda.max_memory_allocated``.

    python benchmarks/bench_learners.py            # meta-batch 32, 5-way 1/5-shot, 15 queries, 1 and 5 inner steps
    python benchmarks/bench_learners.py --small    # meta-batch 4 and fewer steps, for a slow CPU
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import resource
import statistics
import time
from dataclasses import dataclass

import torch
from tabulate import tabulate


@dataclass(frozen=True)
class Config:
    device: str
    meta_batch: int
    k_shot: int
    inner_steps: int
    first_order: bool
    path: str
    filters: int
    warmup: int
    steps: int
    threads: int


def _resident_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def measure(config: Config) -> dict[str, float]:
    """Steps per second (median over timed steps) and peak memory in MiB of one configuration and path."""
    from metabench.registry import default_registry
    from metabench.tasks import TaskBatch

    torch.set_num_threads(config.threads)
    device = torch.device(config.device)
    registry = default_registry()
    n_way, k_query = 5, 15
    backbone = registry.build("backbone", "conv4", {"filters": config.filters}, input_shape=(1, 28, 28), out_dim=n_way)
    learner = registry.build(
        "learner",
        "maml",
        {"inner_steps": config.inner_steps, "first_order": config.first_order, "vectorize": config.path},
    )
    generator = torch.Generator(device=device).manual_seed(0)
    params = learner.init_params(backbone.to(device), generator)
    optimiser = torch.optim.Adam(params.values(), lr=1e-3)
    strategy = registry.build("strategy", "query")

    def labels(per_class: int) -> torch.Tensor:
        return torch.arange(n_way, device=device).repeat_interleave(per_class).expand(config.meta_batch, -1)

    shape = (config.meta_batch, n_way, 1, 28, 28)
    tasks = TaskBatch(
        torch.rand(shape[0], n_way * config.k_shot, *shape[2:], generator=generator, device=device),
        labels(config.k_shot).contiguous(),
        torch.rand(shape[0], n_way * k_query, *shape[2:], generator=generator, device=device),
        labels(k_query).contiguous(),
        n_way,
    )
    baseline = _resident_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    durations = []
    for step in range(config.warmup + config.steps):
        started = time.perf_counter()
        loss, _ = learner.meta_loss(params, tasks, strategy, generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= config.warmup:
            durations.append(time.perf_counter() - started)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10 - baseline
    return {"steps_per_s": 1 / statistics.median(durations), "peak_mib": peak}


def _in_fresh_process(config: Config) -> dict[str, float]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, (config,))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="meta-batch 4, 1 warm-up and 3 timed steps")
    parser.add_argument("--meta-batch", type=int, help="tasks per meta-batch (default 32, or 4 with --small)")
    parser.add_argument("--filters", type=int, default=64, help="conv4 filters (default 64)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads")
    parser.add_argument("--devices", nargs="+", help="default: cpu, and cuda when present")
    args = parser.parse_args()
    meta_batch = args.meta_batch or (4 if args.small else 32)
    warmup, steps = (1, 3) if args.small else (3, 10)
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device, k_shot, inner_steps, first_order in itertools.product(devices, (1, 5), (1, 5), (False, True)):
        results = {}
        for path in ("vmap", "loop"):
            config = Config(
                device, meta_batch, k_shot, inner_steps, first_order, path, args.filters, warmup, steps, args.threads
            )
            results[path] = _in_fresh_process(config)
        order = "1st" if first_order else "2nd"
        rows.append(
            [
                device,
                f"5w{k_shot}s",
                inner_steps,
                order,
                f"{results['vmap']['steps_per_s']:.3f}",
                f"{results['loop']['steps_per_s']:.3f}",
                f"{results['vmap']['steps_per_s'] / results['loop']['steps_per_s']:.2f}x",
                f"{results['vmap']['peak_mib']:.0f}",
                f"{results['loop']['peak_mib']:.0f}",
            ]
        )
        print(tabulate(rows[-1:], tablefmt="plain"), flush=True)
    headers = [
        "device",
        "task",
        "inner steps",
        "order",
        "vmap steps/s",
        "loop steps/s",
        "vmap/loop",
        "vmap peak MiB",
        "loop peak MiB",
    ]
    print(
        f"\nMAML conv4 ({args.filters} filters), 28x28x1, 15 queries/class, meta-batch {meta_batch}, "
        f"{args.threads} threads, median of {steps} steps after {warmup} warm-up"
    )
    print(tabulate(rows, headers=headers, tablefmt="github"))


if __name__ == "__main__":
    main()
