"""How fast the ``standard`` sampler draws an Omniglot meta-batch, next to the copy of its bytes and a naive loop.

Prints the median and best time to draw 32 tasks of 20-way 1-shot with 15 queries per class (10,240 images of 28x28,
32 MB of float32) from the embedded Omniglot's meta-train split, on the CPU and, when present, on CUDA: the sampler as
it runs (the split resident as float32, :func:`resident_images`), the sampler with the split kept as uint8 (what
larger splits get), and the floor, a plain ``torch.index_select`` of the same 10,240 float32 rows, each ratio to the
floor; beside it the same gather into a reused buffer, which says what allocating a fresh batch costs, and the time
to write the batch's bytes at all, a ``fill_`` of that buffer and a fresh ``torch.zeros`` batch (no float32 batch is
drawn faster than the quicker of the two). They
alternate draw by draw, so a machine shared with other work slows them alike; the load average is printed before and
after.
Target: a median wall time under 2 ms on the CPU (the verdict line) and at least 20x faster than the naive loop.

    python benchmarks/bench_sampler.py [--repeats 100] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

from metabench.cache import cache_dir
from metabench.interfaces import ImageSplit, SamplerContext
from metabench.plugins.samplers import episodic
from metabench.registry import default_registry
from metabench.runner import keep_freed_memory
from metabench.tasks import TaskBatch, TaskShape

SHAPE = TaskShape(n_way=20, k_shot=1, k_query=15)
N_TASKS = 32
TARGET_MS = 2.0
WRITES = ("writing the bytes: fill_", "writing them fresh: zeros")


def load_average() -> str:
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


def naive_draw(split: ImageSplit, device: torch.device, generator: torch.Generator) -> TaskBatch:
    """The loop a first implementation writes: per task, per class, per example, index and convert one image."""
    support_x, support_y, query_x, query_y = [], [], [], []
    for _ in range(N_TASKS):
        classes = torch.randperm(split.n_classes, generator=generator)[: SHAPE.n_way].tolist()
        task = ([], [], [], [])
        for label, klass in enumerate(classes):
            examples = torch.randperm(split.images.shape[1], generator=generator)[: SHAPE.k_shot + SHAPE.k_query]
            for rank, example in enumerate(examples.tolist()):
                image = split.images[klass, example].to(device).float() / 255
                side = 0 if rank < SHAPE.k_shot else 2
                task[side].append(image)
                task[side + 1].append(label)
        support_x.append(torch.stack(task[0]))
        support_y.append(torch.tensor(task[1], device=device))
        query_x.append(torch.stack(task[2]))
        query_y.append(torch.tensor(task[3], device=device))
    return TaskBatch(
        torch.stack(support_x), torch.stack(support_y), torch.stack(query_x), torch.stack(query_y), SHAPE.n_way
    )


def alternating_ms(
    draws: dict[str, Callable[[], object]], device: torch.device, repeats: int
) -> dict[str, tuple[list[float], list[float]]]:
    """Wall and CPU times (all threads of the process) of ``repeats`` rounds, each round one call of every draw in
    turn, in milliseconds. On a shared machine the CPU time is the steadier figure: it leaves out the time the
    process waits for a core."""
    for draw in draws.values():
        for _ in range(3):
            draw()
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in draws}
    for _ in range(repeats):
        for name, draw in draws.items():
            wall, cpu = time.perf_counter(), time.process_time()
            draw()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name][0].append(1000 * (time.perf_counter() - wall))
            times[name][1].append(1000 * (time.process_time() - cpu))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=100, help="timed draws of the vectorized sampler")
    parser.add_argument("--naive-repeats", type=int, default=5, help="timed draws of the naive loop")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as in a metabench run: a fresh batch reuses freed heap memory instead of faulting in pages

    registry = default_registry()
    split = registry.build("dataset", "omniglot").split("train")
    sampler = registry.build("sampler", "standard")
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(
        f"{N_TASKS} tasks x {SHAPE.n_way}-way {SHAPE.k_shot}-shot {SHAPE.k_query}-query, Omniglot meta-train split "
        f"{tuple(split.images.shape)}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"load average {load_average()} on {os.cpu_count()} cores"
    )
    n_images = N_TASKS * (SHAPE.support_size + SHAPE.query_size)
    for device in devices:
        context = SamplerContext(device, 0, cache_dir(), "omniglot-bench")
        source = sampler.bind(split, SHAPE, context, role="train")
        limit, episodic.FLOAT_STORAGE_BYTES = episodic.FLOAT_STORAGE_BYTES, 0
        uint8_source = sampler.bind(split, SHAPE, context, role="train")
        episodic.FLOAT_STORAGE_BYTES = limit
        rows = episodic.resident_images(split.images, device)
        order = torch.randint(0, len(rows), (n_images,), device=device)
        reused = torch.empty(n_images, rows.shape[1], device=device)
        generator = torch.Generator().manual_seed(0)
        times = alternating_ms(
            {
                "sampler": lambda: source(N_TASKS, generator),  # noqa: B023 - used at once
                "sampler, uint8 split": lambda: uint8_source(N_TASKS, generator),  # noqa: B023
                "floor: index_select": lambda: rows.index_select(0, order),  # noqa: B023
                "floor, reused buffer": lambda: torch.index_select(rows, 0, order, out=reused),  # noqa: B023
                WRITES[0]: lambda: reused.fill_(0.5),  # noqa: B023
                WRITES[1]: lambda: torch.zeros_like(reused),  # noqa: B023
            },
            device,
            args.repeats,
        )
        resident = split.to(device)
        naive = alternating_ms({"naive": lambda: naive_draw(resident, device, generator)}, device, args.naive_repeats)  # noqa: B023
        floor = [statistics.median(figures) for figures in times["floor: index_select"]]
        print(f"{device.type}: {'':20} {'wall ms: median':>16} {'best':>6} {'/ floor':>8} {'CPU ms':>8} {'/ floor':>8}")
        for name, (wall, cpu) in {**times, "naive loop": naive["naive"]}.items():
            median_wall, median_cpu = statistics.median(wall), statistics.median(cpu)
            print(
                f"  {name:26} {median_wall:10.2f} {min(wall):6.2f} {median_wall / floor[0]:7.2f}x "
                f"{median_cpu:8.2f} {median_cpu / floor[1]:7.2f}x"
            )
        speedup = statistics.median(naive["naive"][0]) / statistics.median(times["sampler"][0])
        print(f"  sampler speed-up over the naive loop (wall): {speedup:.0f}x")
        # The median wall time: CPU time adds up the threads, so with more than one it is not the wait for a batch.
        median_wall = statistics.median(times["sampler"][0])
        verdict = "met" if median_wall < TARGET_MS else "NOT met"
        write = min(statistics.median(times[name][0]) for name in WRITES)
        print(
            f"  target < {TARGET_MS:g} ms per meta-batch with {torch.get_num_threads()} thread(s): {verdict} (median "
            f"wall {median_wall:.2f} ms; the floor's {floor[0]:.2f} ms; writing the batch's bytes alone {write:.2f} ms)"
        )
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
