"""Meta-training speed of metabench's learners against plain reference loops, on conv4 and Omniglot-shaped tasks.

One meta-step = inner loop on every task's support set, outer loss on the queries, backward, Adam step. Each row
times metabench's paths (``vectorize`` = loop / vmap) and a REFERENCE written in this file: for the MAML family a
per-task loop in the style of learn2learn's MAML examples (functional clone of the parameters,
``torch.autograd.grad(create_graph=True)`` per inner step, native ``nn.BatchNorm2d`` in training mode, one backward per
task); for ProtoNets a plain per-task ProtoNets (support and query embedded as one batch). All paths run in ONE process
on the same tensors, alternating step by step after a warm-up; the table gives medians and ratios to the reference,
the load average before and after, and each path's peak memory (measured apart, in a fresh process: the most one
step after a warm-up step holds above what the process held before it).

The ``compiled`` path is the loop path under ``metabench run --compile``, timed with a warm compile cache: first a
fresh process compiles into an empty cache folder (its cold-compile seconds, the first step's time minus the second's,
are printed beside), then a second fresh process reads that cache (is its first step done within 20 s of being
asked for?), then the timed process.

    python benchmarks/bench_learners.py                   # configs (a) quick and (b) paper-scale, 1 torch thread
    python benchmarks/bench_learners.py --configs a       # only the quick profile's config
    python benchmarks/bench_learners.py --device cuda     # GPU: vmap and loop against the reference
    python benchmarks/bench_learners.py --configs a --learners maml --paths loop compiled
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

import torch
import torch.nn.functional as F
from tabulate import tabulate
from torch import nn
from torch.func import functional_call

from metabench.runner import keep_freed_memory

N_WAY, K_SHOT, IMAGE = 5, 1, (1, 28, 28)
INNER_LR, META_LR = 0.4, 1e-3
T = TypeVar("T")
TARGETS = {"maml": 1.5, "fomaml": 1.5, "protonet": 1.0}
"""Speed-up over the reference that issue #16 asks of the best path on CPU; a missed one prints the step's profile."""
WARM_START_S = 20.0
"""Issue 25: a process with a warm compile cache must start training within this long of asking for its first step."""


@dataclass(frozen=True)
class Row:
    """One line of the table: a learner on one config; every path in ``paths`` against the reference."""

    config: str
    learner: str
    filters: int
    k_query: int
    meta_batch: int
    inner_steps: int = 1
    paths: tuple[str, ...] = ("loop", "vmap", "compiled")

    @property
    def name(self) -> str:
        """``maml 5 steps``, ``protonet``: the learner and, where it adapts by gradient steps, how many."""
        if self.learner == "protonet":
            return self.learner
        return f"{self.learner} {self.inner_steps} step{'' if self.inner_steps == 1 else 's'}"


ROWS = {
    "a": [
        Row("a", "maml", 32, 5, 4),
        Row("a", "protonet", 32, 5, 4),
    ],
    "b": [
        Row("b", "maml", 64, 15, 32),
        Row("b", "maml", 64, 15, 32, inner_steps=5),
        Row("b", "fomaml", 64, 15, 32),
        Row("b", "anil", 64, 15, 32),
        Row("b", "protonet", 64, 15, 32),
    ],
}


def episode(row: Row, device: torch.device) -> tuple[torch.Tensor, ...]:
    g = torch.Generator(device=device).manual_seed(0)

    def labels(per_class: int) -> torch.Tensor:
        return torch.arange(N_WAY, device=device).repeat_interleave(per_class).expand(row.meta_batch, -1).contiguous()

    support_x = torch.rand(row.meta_batch, N_WAY * K_SHOT, *IMAGE, generator=g, device=device)
    query_x = torch.rand(row.meta_batch, N_WAY * row.k_query, *IMAGE, generator=g, device=device)
    return support_x, labels(K_SHOT), query_x, labels(row.k_query)


# --------------------------------------------------------------------------------------------------- metabench paths
def metabench_step(row: Row, path: str, device: torch.device) -> Callable[[], None]:
    from metabench.registry import default_registry
    from metabench.runner import compile_learner
    from metabench.tasks import TaskBatch

    registry = default_registry()
    backbone = registry.build("backbone", "conv4", {"filters": row.filters}, input_shape=IMAGE, out_dim=N_WAY)
    options = {"vectorize": "loop" if path == "compiled" else path}
    if row.learner != "protonet":
        options["inner_steps"] = row.inner_steps
    learner = registry.build("learner", row.learner, options)
    generator = torch.Generator(device=device).manual_seed(0)
    params = learner.init_params(backbone.to(device), generator)
    if path == "compiled":
        compile_learner(learner, row.learner)
    optimiser = torch.optim.Adam(params.values(), lr=META_LR)
    strategy = registry.build("strategy", "query")
    tasks = TaskBatch(*episode(row, device), N_WAY)

    def step() -> None:
        loss, _ = learner.meta_loss(params, tasks, strategy, generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    return step


# --------------------------------------------------------------------------------- the REFERENCE (baseline) loops
def reference_conv4(filters: int) -> nn.Module:
    """The same conv4 as metabench's, from stock modules: native ``nn.BatchNorm2d`` with batch statistics."""
    blocks, channels = [], IMAGE[0]
    for _ in range(4):
        blocks += [
            nn.Conv2d(channels, filters, 3, padding=1),
            nn.BatchNorm2d(filters, track_running_stats=False),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
        channels = filters
    return nn.Sequential(nn.Sequential(*blocks, nn.Flatten(1)), nn.Linear(filters, N_WAY))


def reference_step(row: Row, device: torch.device) -> Callable[[], None]:
    """BASELINE, not metabench: learn2learn's MAML/ANIL example loop, or a plain per-task ProtoNets."""
    model = reference_conv4(row.filters).to(device)
    params = dict(model.named_parameters())
    optimiser = torch.optim.Adam(params.values(), lr=META_LR)
    support_x, support_y, query_x, query_y = episode(row, device)
    tasks = row.meta_batch
    body = model[0]
    body_params = {name[2:]: p for name, p in params.items() if name.startswith("0.")}

    def maml(first_order: bool, adapted: tuple[str, ...]) -> None:
        for t in range(tasks):
            fast = dict(params)
            for _ in range(row.inner_steps):
                loss = F.cross_entropy(functional_call(model, fast, (support_x[t],)), support_y[t])
                grads = torch.autograd.grad(loss, [fast[n] for n in adapted], create_graph=not first_order)
                fast.update({n: fast[n] - INNER_LR * g for n, g in zip(adapted, grads, strict=True)})
            (F.cross_entropy(functional_call(model, fast, (query_x[t],)), query_y[t]) / tasks).backward()

    def anil() -> None:
        head = ("1.weight", "1.bias")
        for t in range(tasks):
            support, query = body(support_x[t]), body(query_x[t])
            weight, bias = params[head[0]], params[head[1]]
            for _ in range(row.inner_steps):
                loss = F.cross_entropy(F.linear(support, weight, bias), support_y[t])
                grad_w, grad_b = torch.autograd.grad(loss, [weight, bias], create_graph=True)
                weight, bias = weight - INNER_LR * grad_w, bias - INNER_LR * grad_b
            (F.cross_entropy(F.linear(query, weight, bias), query_y[t]) / tasks).backward()

    def protonet() -> None:
        for t in range(tasks):
            n_support = support_x.shape[1]
            embeddings = functional_call(body, body_params, (torch.cat([support_x[t], query_x[t]]),))
            prototypes = embeddings[:n_support].view(N_WAY, K_SHOT, -1).mean(1)
            logits = -torch.cdist(embeddings[n_support:], prototypes).square()
            (F.cross_entropy(logits, query_y[t]) / tasks).backward()

    every = tuple(params)
    run = {
        "maml": lambda: maml(False, every),
        "fomaml": lambda: maml(True, every),
        "anil": anil,
        "protonet": protonet,
    }[row.learner]

    def step() -> None:
        optimiser.zero_grad()
        run()
        optimiser.step()

    return step


# -------------------------------------------------------------------------------------------------------- measuring
def make_step(row: Row, path: str, device: torch.device) -> Callable[[], None]:
    return reference_step(row, device) if path == "reference" else metabench_step(row, path, device)


def synchronised(step: Callable[[], None], device: torch.device) -> float:
    started = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def time_paths(row: Row, device: torch.device, warmup: int, rounds: int) -> dict[str, float]:
    """Median seconds per meta-step of every path, the paths alternating step by step (same load for all)."""
    steps = {path: make_step(row, path, device) for path in ("reference", *row.paths)}
    for step in steps.values():
        for _ in range(warmup):
            synchronised(step, device)
    durations: dict[str, list[float]] = {path: [] for path in steps}
    for _ in range(rounds):
        for path, step in steps.items():
            durations[path].append(synchronised(step, device))
    return {path: statistics.median(values) for path, values in durations.items()}


def _resident_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def peak_memory(row: Row, path: str, device_name: str, threads: int) -> float:
    """MiB one meta-step of ``path`` needs beyond what the process held before it (a fresh process, after one warm-up
    step; on CPU the resident set sampled every millisecond during the step)."""
    torch.set_num_threads(threads)
    device = torch.device(device_name)
    step = make_step(row, path, device)
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        baseline = torch.cuda.memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
        step()
        return torch.cuda.max_memory_allocated() / 2**20 - baseline
    baseline, peak, done = _resident_mib(), [0.0], threading.Event()

    def sample() -> None:
        while not done.wait(0.001):
            peak[0] = max(peak[0], _resident_mib())

    sampler = threading.Thread(target=sample)
    sampler.start()
    step()
    done.set()
    sampler.join()
    return max(peak[0], _resident_mib()) - baseline


def in_fresh_process(function: Callable[..., T], *args: object) -> T:
    pool = multiprocessing.get_context("spawn").Pool(1)
    try:
        return pool.apply(function, args)
    finally:  # not the context manager, which terminates the worker and so leaks its Inductor workers' semaphores
        pool.close()
        pool.join()


def peak_in_fresh_process(row: Row, path: str, device: str, threads: int) -> float:
    # Large blocks straight from mmap, so that freed tensors leave the resident set and it tracks live memory.
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(2**16))
    return in_fresh_process(peak_memory, row, path, device, threads)


def first_compiled_steps(row: Row, device_name: str, threads: int, cache: str) -> tuple[float, float]:
    """Seconds of the first two meta-steps of the compiled path in this process, torch's compile caches in
    ``cache``: the first compiles (or reads the cache), the second is a normal step."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
    torch.set_num_threads(threads)
    device = torch.device(device_name)
    step = make_step(row, "compiled", device)
    return synchronised(step, device), synchronised(step, device)


def compile_seconds(row: Row, device: str, threads: int) -> str:
    """Cold and warm-cache compile seconds of the compiled path (two fresh processes, one fresh cache folder, then
    this process's own), and whether the warm-cache process started training within :data:`WARM_START_S`."""
    cache = tempfile.mkdtemp(prefix="bench-compile-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # the timed path and its memory process read the warm cache
    cold_first, cold_step = in_fresh_process(first_compiled_steps, row, device, threads, cache)
    warm_first, warm_step = in_fresh_process(first_compiled_steps, row, device, threads, cache)
    verdict = "yes" if warm_first <= WARM_START_S else "NO"
    return (
        f"compiled {row.name} ({row.config}): cold compile {cold_first - cold_step:.1f} s (first step "
        f"{cold_first:.1f} s, next {cold_step:.2f} s); warm-cache process: compile {warm_first - warm_step:.1f} s, "
        f"first step done {warm_first:.1f} s after it was asked for: within {WARM_START_S:.0f} s: {verdict}"
    )


def profile_of(row: Row, path: str, device: torch.device, steps: int = 3) -> str:
    """Where one meta-step of ``path`` spends its time: torch profiler, top operators by self time."""
    step = make_step(row, path, device)
    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        for _ in range(steps):
            step()
    return profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", choices=sorted(ROWS), default=sorted(ROWS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per path first")
    parser.add_argument("--rounds", type=int, default=7, help="timed steps per path (alternating); median")
    parser.add_argument("--paths", nargs="+", help="metabench paths to time (default: loop and vmap)")
    parser.add_argument("--learners", nargs="+", help="only these learners' rows")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument("--no-timing", action="store_true", help="only the peak-memory processes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # As in a metabench run (runner.prepare_cpu), freed memory stays in the heap, for the reference too: neither pays
    # the page faults of memory handed back and mapped again, which made a step's time depend on the steps before it.
    keep_freed_memory()
    device = torch.device(args.device)
    rows = [row for config in args.configs for row in ROWS[config]]
    rows = [row for row in rows if not args.learners or row.learner in args.learners]
    if args.paths:
        rows = [replace(row, paths=tuple(args.paths)) for row in rows]
    table = []
    speedups: dict[tuple[Row, str], float] = {}
    compiles = []
    for row in rows:
        if "compiled" in row.paths and not args.no_timing:
            compiles.append(compile_seconds(row, args.device, args.threads))
            print(compiles[-1], flush=True)
        load_before = os.getloadavg()[0]
        seconds = {} if args.no_timing else time_paths(row, device, args.warmup, args.rounds)
        load_after = os.getloadavg()[0]
        peaks = (
            {}
            if args.no_memory
            else {p: peak_in_fresh_process(row, p, args.device, args.threads) for p in ("reference", *row.paths)}
        )
        reference = "plain ProtoNets" if row.learner == "protonet" else "l2l-style loop"
        for path in row.paths:
            timed = ["-", f"- ({reference})", "-"]
            if seconds:
                speedups[row, path] = seconds["reference"] / seconds[path]
                timed = [
                    f"{1 / seconds[path]:.3f}",
                    f"{1 / seconds['reference']:.3f} ({reference})",
                    f"{speedups[row, path]:.2f}x",
                ]
            table.append(
                [
                    row.config,
                    f"{row.filters}f {row.k_query}q T={row.meta_batch}",
                    row.name,
                    path,
                    *timed,
                    f"{peaks[path]:.0f} / {peaks['reference']:.0f}" if peaks else "-",
                    f"{load_before:.1f}-{load_after:.1f}",
                ]
            )
            print(tabulate(table[-1:], tablefmt="plain"), flush=True)
    headers = ["cfg", "shape", "learner", "path", "steps/s", "reference steps/s", "speed-up", "peak MiB", "load"]
    print(
        f"\nconv4, 28x28x1, {N_WAY}-way {K_SHOT}-shot, device {args.device}, {args.threads} torch thread(s), "
        f"median of {args.rounds} alternating steps after {args.warmup} warm-up; peak MiB = path / reference"
    )
    print(tabulate(table, headers=headers, tablefmt="github"))
    if compiles:
        print("\n" + "\n".join(compiles))
    if args.no_timing or device.type != "cpu":
        return
    print("\nTargets on CPU (the best metabench path against the reference):")
    for row in rows:
        if row.learner not in TARGETS:
            continue
        best = max(row.paths, key=lambda path: speedups[row, path])
        target = TARGETS[row.learner]
        verdict = "met" if speedups[row, best] >= target else "MISSED"
        print(
            f"  ({row.config}) {row.name}: {speedups[row, best]:.2f}x with path {best}, target >= {target}x: {verdict}"
        )
        if verdict == "MISSED":
            print(f"    where one step of path {best} spends its time:\n{profile_of(row, best, device)}")


if __name__ == "__main__":
    main()
