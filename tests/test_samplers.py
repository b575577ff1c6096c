"""Episodic samplers ``standard`` and ``nme``: labels, determinism, ragged classes, regression, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from metabench.errors import ConfigError
from metabench.interfaces import ImageSplit, SamplerContext
from metabench.plugins.samplers import episodic
from metabench.plugins.samplers.episodic import nme_label_sets
from metabench.probe import digest
from metabench.registry import default_registry
from metabench.tasks import TaskBatch, TaskShape

N_CLASSES, N_EXAMPLES = 23, 9


def tagged_split(counts: list[int] | None = None) -> ImageSplit:
    """Every image says where it came from: pixel 0 holds its class, pixel 1 its example index, pixel 2 is 255 on
    padding (examples beyond a ragged class's count)."""
    images = torch.zeros(N_CLASSES, N_EXAMPLES, 1, 2, 2, dtype=torch.uint8)
    images[..., 0, 0, 0] = torch.arange(N_CLASSES)[:, None]
    images[..., 0, 0, 1] = torch.arange(N_EXAMPLES)[None, :]
    if counts is not None:
        images[..., 0, 1, 0] = 255 * (torch.arange(N_EXAMPLES)[None, :] >= torch.tensor(counts)[:, None])
    names = tuple(f"class{c}" for c in range(N_CLASSES))
    return ImageSplit(images, names, torch.tensor(counts) if counts is not None else None)


def context(seed: object = 0) -> SamplerContext:
    return SamplerContext(torch.device("cpu"), seed, Path("/nonexistent"), "tagged")  # type: ignore[arg-type]


def bind(sampler: str, split, shape: TaskShape, *, role: str = "train", seed: object = 0):
    return default_registry().build("sampler", sampler).bind(split, shape, context(seed), role=role)


def tags(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(class, example, is padding) of each image of ``x [T, S, 1, 2, 2]``."""
    raw = (x * 255).round().long()
    return raw[..., 0, 0, 0], raw[..., 0, 0, 1], raw[..., 0, 1, 0] == 255


def class_of_label(tasks: TaskBatch) -> torch.Tensor:
    """``[T, n_way]``: the class that carries each label in each task (checked to be unique)."""
    support_class, _, _ = tags(tasks.support_x)
    query_class, _, _ = tags(tasks.query_x)
    mapping = torch.full((tasks.n_tasks, tasks.n_way), -1)
    for x_class, y in ((support_class, tasks.support_y), (query_class, tasks.query_y)):
        for label in range(tasks.n_way):
            classes = torch.where(y == label, x_class, -1)
            first = classes.max(dim=1).values
            assert ((classes == first[:, None]) | (classes == -1)).all(), "one label mixes two classes"
            assert ((mapping[:, label] == -1) | (mapping[:, label] == first)).all()
            mapping[:, label] = first
    return mapping


def test_both_samplers_are_registered():
    assert {"standard", "nme"} <= set(default_registry().names("sampler"))


def test_standard_tasks_have_distinct_classes_permuted_labels_and_distinct_examples():
    shape = TaskShape(n_way=5, k_shot=2, k_query=3)
    tasks = bind("standard", tagged_split(), shape)(200, torch.Generator().manual_seed(1))
    assert tasks.support_x.shape == (200, 10, 1, 2, 2) and tasks.query_x.shape == (200, 15, 1, 2, 2)
    assert tasks.support_x.dtype == torch.float32 and tasks.support_y.dtype == torch.int64
    assert tasks.n_way == 5
    for y, k in ((tasks.support_y, 2), (tasks.query_y, 3)):
        assert (torch.bincount(y[0], minlength=5) == k).all()
        assert (y == y[0]).all()
    mapping = class_of_label(tasks)
    assert (mapping.sort(dim=1).values.diff(dim=1) > 0).all(), "a task repeats a class"
    # Labels are a random permutation per task: rarely in class order (chance 1/5!), and label 0 goes everywhere.
    assert (mapping.diff(dim=1) > 0).all(dim=1).float().mean() < 0.05
    assert len(mapping[:, 0].unique()) > N_CLASSES // 2
    # No example appears twice in a task (support and query together).
    x = torch.cat([tasks.support_x, tasks.query_x], dim=1)
    klass, example, _ = tags(x)
    keys = (klass * N_EXAMPLES + example).sort(dim=1).values
    assert (keys.diff(dim=1) > 0).all()


def test_same_generator_seed_gives_same_tasks_and_another_seed_other_tasks():
    draw = bind("standard", tagged_split(), TaskShape(4, 1, 2))
    first, again = (draw(8, torch.Generator().manual_seed(7)) for _ in range(2))
    other = draw(8, torch.Generator().manual_seed(8))
    assert torch.equal(first.support_x, again.support_x) and torch.equal(first.query_x, again.query_x)
    assert not torch.equal(first.query_x, other.query_x)


def test_nme_class_keeps_its_label_in_every_task_and_tasks_take_one_class_per_set():
    shape = TaskShape(n_way=4, k_shot=1, k_query=2)
    tasks = bind("nme", tagged_split(), shape, seed=3)(300, torch.Generator().manual_seed(0))
    mapping = class_of_label(tasks)
    label_of_class = {}
    for task in mapping.tolist():
        for label, klass in enumerate(task):
            assert label_of_class.setdefault(klass, label) == label, f"class {klass} changed its label"
    assert len(label_of_class) == N_CLASSES, "every class of the split is used"
    sets = nme_label_sets(N_CLASSES, 4, seed=3)
    assert sorted(len(s) for s in sets) == [5, 6, 6, 6]
    for label, members in enumerate(sets):
        assert set(mapping[:, label].tolist()) == set(members.tolist())


def test_nme_sets_follow_the_context_seed():
    shape = TaskShape(4, 1, 1)
    a, b = (class_of_label(bind("nme", tagged_split(), shape, seed=s)(200, torch.Generator())) for s in (1, 2))
    assert set(a[:, 0].tolist()) != set(b[:, 0].tolist())


def test_nme_evaluation_tasks_are_ordinary_standard_tasks():
    tasks = bind("nme", tagged_split(), TaskShape(4, 1, 1), role="val")(200, torch.Generator().manual_seed(0))
    mapping = class_of_label(tasks)
    labels_of_class = {c: set((mapping == c).nonzero()[:, 1].tolist()) for c in mapping.unique().tolist()}
    assert max(len(labels) for labels in labels_of_class.values()) > 1


@pytest.mark.parametrize("sampler", ["standard", "nme"])
def test_ragged_classes_never_yield_padding(sampler):
    counts = [3 + c % 5 for c in range(N_CLASSES)]
    tasks = bind(sampler, tagged_split(counts), TaskShape(5, 1, 2))(300, torch.Generator().manual_seed(0))
    for x in (tasks.support_x, tasks.query_x):
        klass, example, padding = tags(x)
        assert not padding.any()
        assert (example < torch.tensor(counts)[klass]).all()


def test_ragged_classes_limit_shots_by_the_smallest_class():
    counts = [9] * (N_CLASSES - 1) + [4]
    with pytest.raises(ConfigError, match=r"k_shot \+ k_query = 2 \+ 3 = 5 exceeds the 4 examples.*'class22'"):
        bind("standard", tagged_split(counts), TaskShape(5, 2, 3))


@pytest.mark.parametrize("sampler", ["standard", "nme"])
def test_bad_shapes_and_seeds_are_errors_naming_value_limit_and_source(sampler):
    split = tagged_split()
    source = rf"sampler '{sampler}' on dataset 'tagged' split 'train'"
    with pytest.raises(ConfigError, match=rf"{source}: k_shot \+ k_query = 5 \+ 5 = 10 exceeds the 9 examples"):
        bind(sampler, split, TaskShape(5, 5, 5))
    with pytest.raises(ConfigError, match=rf"{source}: n_way = 24 exceeds the 23 classes"):
        bind(sampler, split, TaskShape(24, 1, 1))
    with pytest.raises(ConfigError, match=rf"{source}: seed = 1.5 is not an integer"):
        bind(sampler, split, TaskShape(5, 1, 1), seed=1.5)
    with pytest.raises(ConfigError, match=rf"{source}: n_way is none"):
        bind(sampler, split, TaskShape(None, 1, 1))


@pytest.mark.parametrize("sampler", ["standard", "nme"])
def test_regression_families_give_k_support_and_q_query_points(sampler):
    family = default_registry().build("dataset", "sinusoid").split("train")
    tasks = bind(sampler, family, TaskShape(None, 5, 7))(3, torch.Generator().manual_seed(0))
    assert tasks.n_way is None
    assert tasks.support_x.shape == tasks.support_y.shape == (3, 5, 1)
    assert tasks.query_x.shape == tasks.query_y.shape == (3, 7, 1)
    with pytest.raises(ConfigError, match=r"n_way = 5, but a regression family takes n_way = none"):
        bind(sampler, family, TaskShape(5, 5, 7))


def test_standard_on_embedded_omniglot_gives_float_images_in_the_unit_range():
    split = default_registry().build("dataset", "omniglot").split("train")
    tasks = bind("standard", split, TaskShape(20, 1, 15))(4, torch.Generator().manual_seed(0))
    assert tasks.support_x.shape == (4, 20, 1, 28, 28) and tasks.query_x.shape == (4, 300, 1, 28, 28)
    assert tasks.query_y.shape == (4, 300) and tasks.query_y.dtype == torch.int64
    assert tasks.query_x.dtype == torch.float32 and tasks.query_x.min() == 0 and tasks.query_x.max() == 1
    every_image = split.images.flatten(0, 1).flatten(1).float() / 255
    assert (every_image == tasks.support_x[0, 3].flatten()).all(dim=1).any(), "an image of the split, unaltered"


@pytest.mark.parametrize("sampler", ["standard", "nme"])
def test_a_split_kept_as_uint8_gives_the_same_tasks_as_one_kept_as_float(sampler, monkeypatch):
    split = default_registry().build("dataset", "omniglot").split("train")
    kept_as_float = bind(sampler, split, TaskShape(5, 2, 3))
    monkeypatch.setattr(episodic, "FLOAT_STORAGE_BYTES", 0)  # a split too large for a float copy
    kept_as_uint8 = bind(sampler, split, TaskShape(5, 2, 3))
    a, b = (source(6, torch.Generator().manual_seed(1)) for source in (kept_as_float, kept_as_uint8))
    for x, y in ((a.support_x, b.support_x), (a.query_x, b.query_x), (a.query_y, b.query_y)):
        assert x.dtype == y.dtype and torch.equal(x, y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gives_the_same_tasks_as_cpu():
    split, shape = tagged_split([3 + c % 5 for c in range(N_CLASSES)]), TaskShape(5, 1, 2)
    sampler = default_registry().build("sampler", "standard")
    on = {
        d: sampler.bind(split, shape, SamplerContext(torch.device(d), 0, Path("/x"), "t"), role="train")
        for d in ("cpu", "cuda")
    }
    cpu, cuda = (on[d](16, torch.Generator().manual_seed(0)) for d in ("cpu", "cuda"))
    assert cuda.device.type == "cuda"
    assert torch.equal(cpu.query_x, cuda.query_x.cpu()) and torch.equal(cpu.support_y, cuda.support_y.cpu())


def replayed_standard_batch(split: ImageSplit, shape: TaskShape, n_tasks: int, seed: int) -> TaskBatch:
    """The ``standard`` draw written out per example, independently of episodic.py: the same two ``torch.rand``
    calls in the same order, each image converted by the plain formula ``uint8.float() / 255``."""
    generator = torch.Generator().manual_seed(seed)
    class_scores = torch.rand(n_tasks, split.n_classes, generator=generator)
    example_scores = torch.rand(n_tasks, shape.n_way, split.images.shape[1], generator=generator)
    support_x, query_x = [], []
    for task in range(n_tasks):
        support, query = [], []
        for label, klass in enumerate(class_scores[task].topk(shape.n_way).indices.tolist()):
            examples = example_scores[task, label].topk(shape.k_shot + shape.k_query).indices.tolist()
            images = [split.images[klass, example].float() / 255 for example in examples]
            support += images[: shape.k_shot]
            query += images[shape.k_shot :]
        support_x.append(torch.stack(support))
        query_x.append(torch.stack(query))
    labels = torch.arange(shape.n_way)
    support_y = labels.repeat_interleave(shape.k_shot).repeat(n_tasks, 1)
    query_y = labels.repeat_interleave(shape.k_query).repeat(n_tasks, 1)
    return TaskBatch(torch.stack(support_x), support_y, torch.stack(query_x), query_y, shape.n_way)


@pytest.mark.parametrize("storage", ["float32", "uint8"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_standard_draws_bit_identical_values_to_the_per_example_formula(storage, dtype, monkeypatch):
    """The committed run records replay their first meta-steps bit-identically, so the drawn values, the labels and
    the generator's consumption must not move; float64 runs cast the float32 batch, so that cast is checked too."""
    split, shape = default_registry().build("dataset", "omniglot").split("train"), TaskShape(5, 2, 3)
    if storage == "uint8":
        monkeypatch.setattr(episodic, "FLOAT_STORAGE_BYTES", 0)
    generator = torch.Generator().manual_seed(7)
    drawn = bind("standard", split, shape)(4, generator)
    expected = replayed_standard_batch(split, shape, 4, 7)
    for got, want in ((drawn.support_x, expected.support_x), (drawn.query_x, expected.query_x)):
        assert got.dtype == torch.float32 and torch.equal(got.to(dtype), want.to(dtype))
    assert torch.equal(drawn.support_y, expected.support_y) and torch.equal(drawn.query_y, expected.query_y)
    replayed = torch.Generator().manual_seed(7)
    torch.rand(4, split.n_classes, generator=replayed), torch.rand(4, 5, split.images.shape[1], generator=replayed)
    assert torch.equal(generator.get_state(), replayed.get_state()), "the draw consumed a different amount of RNG"


@pytest.mark.parametrize(
    ("sampler", "expected"),
    [
        ("standard", "8338a8668baedd521502a5069c11f05e3e9acdde474aeafbf8eb27362175b7fa"),
        ("nme", "99b6cc71f691631a9309e8bbe46d4f6682f3858720f26e738976289437e73138"),
    ],
)
def test_omniglot_meta_batch_digest_is_pinned(sampler, expected):
    """The sha256 of a 20-way 1-shot 15-query meta-batch as the records were made: a change to any drawn value,
    label, dtype or shape, on either sampler, fails here before it stales the committed records."""
    split = default_registry().build("dataset", "omniglot").split("train")
    tasks = bind(sampler, split, TaskShape(20, 1, 15))(2, torch.Generator().manual_seed(0))
    named = {"support_x": tasks.support_x, "support_y": tasks.support_y, "query_x": tasks.query_x}
    assert digest({**named, "query_y": tasks.query_y}) == expected
