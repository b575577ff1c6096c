"""How fast the ``standard`` sampler draws an Omniglot meta-batch, next to a naive per-example Python loop.

Prints the median time to draw 32 tasks of 20-way 1-shot with 15 queries per class (10,240 images of 28x28) from the
embedded Omniglot's meta-train split, on the CPU and, when present, on CUDA. Target: under 2 ms on the CPU and at
least 20x faster than the naive loop.

    python benchmarks/bench_sampler.py [--repeats 100] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from metabench.cache import cache_dir
from metabench.interfaces import ImageSplit, SamplerContext
from metabench.registry import default_registry
from metabench.tasks import TaskBatch, TaskShape

SHAPE = TaskShape(n_way=20, k_shot=1, k_query=15)
N_TASKS = 32


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


def timings_ms(draw: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, float]:
    """Median and best time of ``repeats`` draws (the best shows the machine's capacity when others share it)."""
    for _ in range(3):
        draw()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        draw()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times), 1000 * min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=100, help="timed draws of the vectorized sampler")
    parser.add_argument("--naive-repeats", type=int, default=5, help="timed draws of the naive loop")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    registry = default_registry()
    split = registry.build("dataset", "omniglot").split("train")
    sampler = registry.build("sampler", "standard")
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(
        f"{N_TASKS} tasks x {SHAPE.n_way}-way {SHAPE.k_shot}-shot {SHAPE.k_query}-query, Omniglot meta-train split "
        f"{tuple(split.images.shape)}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
    )
    print(f"{'device':8} {'vectorized ms (median / best)':>30} {'naive loop ms (median / best)':>30} {'speedup':>8}")
    for device in devices:
        context = SamplerContext(device, 0, cache_dir(), "omniglot-bench")
        source = sampler.bind(split, SHAPE, context, role="train")
        generator = torch.Generator().manual_seed(0)
        fast = timings_ms(lambda: source(N_TASKS, generator), device, args.repeats)  # noqa: B023 - used at once
        resident = split.to(device)
        slow = timings_ms(lambda: naive_draw(resident, device, generator), device, args.naive_repeats)  # noqa: B023
        print(
            f"{device.type:8} {fast[0]:19.2f} / {fast[1]:6.2f} {slow[0]:19.1f} / {slow[1]:6.1f} "
            f"{slow[0] / fast[0]:7.0f}x"
        )
        # The floor no sampler goes below: writing the meta-batch's float32 images (32 MB) at all.
        n_images = N_TASKS * (SHAPE.support_size + SHAPE.query_size)
        gathered = resident.images[0, :1].expand(n_images, -1, -1, -1).contiguous()
        floor = timings_ms(lambda: gathered.float(), device, args.repeats)  # noqa: B023
        print(f"{'':8} floor (uint8 -> float32 of the same images alone): {floor[0]:.2f} / {floor[1]:.2f} ms")


if __name__ == "__main__":
    main()
