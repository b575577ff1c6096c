"""Episodic task samplers: ``standard`` (mutually exclusive N-way K-shot) and ``nme`` (non-mutually-exclusive).

A split lives on the run's device as one tensor of flattened images (:func:`resident_images`). Every random index is
drawn on the generator's device (so a seed gives the same tasks on CPU and GPU), moved to the split's device, and all
examples of a meta-batch are gathered by one ``index_select``.

Within a task the support set is ordered by label (``K`` examples of label 0, then of label 1, ...), and so is the
query set; which class gets which label is random (``standard``) or fixed by the class's set (``nme``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from metabench import ConfigError, TaskBatch, TaskShape
from metabench.interfaces import ImageSplit, RegressionFamily, SamplerContext, Split, SplitName, TaskSource

ClassChooser = Callable[[int, torch.Generator], Tensor]
"""``choose(n_tasks, generator) -> classes [n_tasks, n_way]`` on the generator's device; column j gets label j."""


def _where(sampler: str, role: SplitName, context: SamplerContext) -> str:
    return f"sampler '{sampler}' on dataset '{context.dataset_key}' split '{role}'"


def _check_seed(seed: object, where: str) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"{where}: seed = {seed!r} is not an integer")


def _check_image_shape(split: ImageSplit, shape: TaskShape, where: str) -> None:
    if shape.n_way is None:
        raise ConfigError(f"{where}: n_way is none, but an image split needs N-way classification tasks")
    if shape.k_shot < 1 or shape.k_query < 1:
        raise ConfigError(f"{where}: k_shot = {shape.k_shot} and k_query = {shape.k_query}; both must be >= 1")
    if shape.n_way > split.n_classes:
        raise ConfigError(f"{where}: n_way = {shape.n_way} exceeds the {split.n_classes} classes of the split")
    smallest = split.min_examples()
    if shape.k_shot + shape.k_query > smallest:
        counts = split.counts if split.counts is not None else torch.full((split.n_classes,), smallest)
        name = split.class_names[int(counts.argmin())]
        raise ConfigError(
            f"{where}: k_shot + k_query = {shape.k_shot} + {shape.k_query} = {shape.k_shot + shape.k_query} "
            f"exceeds the {smallest} examples of the split's smallest class ('{name}')"
        )


def _regression_source(family: Split, shape: TaskShape, context: SamplerContext, where: str) -> TaskSource:
    if not isinstance(family, RegressionFamily):
        raise ConfigError(f"{where}: a {type(family).__name__} split is neither an ImageSplit nor a RegressionFamily")
    if shape.n_way is not None:
        raise ConfigError(f"{where}: n_way = {shape.n_way}, but a regression family takes n_way = none")
    if shape.k_shot < 1 or shape.k_query < 1:
        raise ConfigError(f"{where}: k_shot = {shape.k_shot} and k_query = {shape.k_query}; both must be >= 1")

    def draw(n_tasks: int, generator: torch.Generator) -> TaskBatch:
        return family.sample(n_tasks, shape.k_shot, shape.k_query, generator, context.device)

    return draw


def _uniform_classes(n_classes: int, n_way: int) -> ClassChooser:
    """N distinct classes per task in random order: the top-N of i.i.d. uniform scores is a uniform ordered sample."""

    def choose(n_tasks: int, generator: torch.Generator) -> Tensor:
        scores = torch.rand(n_tasks, n_classes, generator=generator, device=generator.device)
        return scores.topk(n_way, dim=1).indices

    return choose


def _one_class_per_set(sets: list[Tensor]) -> ClassChooser:
    """One class from each set per task, the class from set j in column j (so it always gets label j)."""
    sizes = torch.tensor([len(s) for s in sets], dtype=torch.float64)
    table = torch.nn.utils.rnn.pad_sequence(sets, batch_first=True)  # [n_way, largest set], padded with class 0

    def choose(n_tasks: int, generator: torch.Generator) -> Tensor:
        uniform = torch.rand(n_tasks, len(sets), generator=generator, device=generator.device, dtype=torch.float64)
        position = (uniform * sizes.to(uniform.device)).long()  # < size: float64 keeps u * size below it
        return table.to(uniform.device).gather(1, position.T).T

    return choose


def nme_label_sets(n_classes: int, n_way: int, seed: int) -> list[Tensor]:
    """The classes of each label's set in ``nme`` meta-training: a seeded shuffle cut into ``n_way`` nearly equal
    sets (sizes differ by at most one, as MetaMix's 64 miniImageNet classes into 13, 13, 13, 13, 12)."""
    return list(torch.randperm(n_classes, generator=torch.Generator().manual_seed(seed)).tensor_split(n_way))


FLOAT_STORAGE_BYTES = 1 << 30
"""The largest float32 copy of a split a sampler keeps (Omniglot's 32,460 images take 102 MB)."""


def resident_images(images: Tensor, device: torch.device) -> Tensor:
    """The split's ``uint8`` images ``[classes, examples, C, H, W]`` as a sampler keeps them on ``device``: one row
    per image, converted once to ``float32`` in ``[0, 1]`` when that copy takes at most :data:`FLOAT_STORAGE_BYTES`,
    so that a meta-batch is a single gather of its float bytes (the conversion, which costs twice that gather, is
    paid once per split, not once per meta-batch: benchmarks/bench_sampler.py); else ``uint8``, 4x smaller, converted
    per meta-batch. The same division either way, so the same numbers."""
    rows = images.reshape(images.shape[0] * images.shape[1], -1).to(device)
    if rows.numel() * torch.finfo(torch.float32).bits // 8 > FLOAT_STORAGE_BYTES:
        return rows
    return rows.float().div_(255)


def _image_source(split: ImageSplit, shape: TaskShape, choose: ClassChooser, device: torch.device) -> TaskSource:
    n_classes, n_slots, *image_shape = split.images.shape
    flat_images = resident_images(split.images, device)
    counts = split.counts  # stays on the host, beside the generator that draws the example indices
    n_way, k_shot, k_query = shape.n_way, shape.k_shot, shape.k_query
    labels = torch.arange(n_way, device=device)
    support_y, query_y = labels.repeat_interleave(k_shot), labels.repeat_interleave(k_query)

    def draw(n_tasks: int, generator: torch.Generator) -> TaskBatch:
        classes = choose(n_tasks, generator)
        scores = torch.rand(n_tasks, n_way, n_slots, generator=generator, device=generator.device)
        if counts is not None:  # padding slots score below every real example, so top-k never reaches them
            slots = torch.arange(n_slots, device=scores.device)
            scores = scores.masked_fill(slots >= counts.to(scores.device)[classes].unsqueeze(-1), -1.0)
        rows = classes.unsqueeze(-1) * n_slots + scores.topk(k_shot + k_query, dim=-1).indices  # [T, N, K+Q]
        # All support rows, then all query rows: one gather yields both sets contiguous, converted in one pass.
        order = torch.cat([rows[:, :, :k_shot].flatten(), rows[:, :, k_shot:].flatten()]).to(device)
        picked = flat_images.index_select(0, order)
        if picked.dtype == torch.uint8:
            picked = picked.float().div_(255)
        n_support = n_tasks * n_way * k_shot
        support = picked[:n_support].view(n_tasks, n_way * k_shot, *image_shape)
        query = picked[n_support:].view(n_tasks, n_way * k_query, *image_shape)
        return TaskBatch(support, support_y.repeat(n_tasks, 1), query, query_y.repeat(n_tasks, 1), n_way)

    return draw


class StandardSampler:
    """Mutually exclusive N-way K-shot tasks: each task draws N distinct classes of the split and assigns them the
    labels 0..N-1 in random order, then K support and Q query examples per class (all distinct). On a regression
    family: K support and Q query points per task."""

    name = "standard"

    def bind(self, split: Split, shape: TaskShape, context: SamplerContext, *, role: SplitName) -> TaskSource:
        where = _where(self.name, role, context)
        _check_seed(context.seed, where)
        if not isinstance(split, ImageSplit):
            return _regression_source(split, shape, context, where)
        _check_image_shape(split, shape, where)
        return _image_source(split, shape, _uniform_classes(split.n_classes, shape.n_way), context.device)


class NonMutuallyExclusiveSampler(StandardSampler):
    """Non-mutually-exclusive tasks (MetaMix App. C.3): for meta-training (``role="train"``) the split's classes are
    split once, at random (``context.seed``), into N sets of nearly equal size; every class of set j has label j in
    every task, and a task takes one class from each set. A model can then memorise the labels without adapting.
    Meta-validation and meta-test tasks are ordinary ``standard`` tasks; so are tasks on a regression family."""

    name = "nme"

    def bind(self, split: Split, shape: TaskShape, context: SamplerContext, *, role: SplitName) -> TaskSource:
        if role != "train" or not isinstance(split, ImageSplit):
            return super().bind(split, shape, context, role=role)
        where = _where(self.name, role, context)
        _check_seed(context.seed, where)
        _check_image_shape(split, shape, where)
        sets = nme_label_sets(split.n_classes, shape.n_way, context.seed)
        return _image_source(split, shape, _one_class_per_set(sets), context.device)
