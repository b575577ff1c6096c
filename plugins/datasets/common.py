"""What the image datasets share: decoding, the class split, the decoded-array cache and the dataset object."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from metabench import ConfigError, Param, TaskBatch, atomic_write, cache_dir, stable_hash
from metabench.interfaces import ImageSplit, SplitName

SEED_PARAM = Param("seed", int, 0, "seed of the random class split")


def fraction_param(name: str, default: float, what: str) -> Param:
    """The share of ``what`` in the split that ``name`` (``train_fraction``, ``val_fraction``) sizes."""
    return Param(name, float, default, f"share of {what} in the meta-{name.split('_')[0]} split", low=0.0, high=1.0)


def decode_image(data: bytes | Path, *, size: int, channels: int, invert: bool, source: str) -> np.ndarray:
    """One image file as ``uint8 [channels, size, size]`` (Lanczos resampling, as MAML's Omniglot preprocessing)."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            image = image.convert("L" if channels == 1 else "RGB").resize((size, size), Image.Resampling.LANCZOS)
            array = np.asarray(image, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise ConfigError(f"{source}: cannot read the image ({error})") from error
    if invert:
        array = 255 - array
    return array.reshape(size, size, channels).transpose(2, 0, 1)


def assign_splits(
    units: Sequence[str], fractions: Mapping[SplitName, float], rest: SplitName, seed: int, *, unit: str, where: str
) -> list[SplitName]:
    """The split of each class, given the unit each belongs to (itself, its alphabet, its group...): the distinct
    units are shuffled (``seed``) and cut by ``fractions``; split ``rest`` takes what the others leave. Every split
    must receive at least one unit."""
    distinct = sorted(set(units))
    sizes = {name: round(fraction * len(distinct)) for name, fraction in fractions.items()}
    sizes[rest] = len(distinct) - sum(sizes.values())
    if min(sizes.values()) < 1:
        given = ", ".join(f"{name}_fraction = {fraction}" for name, fraction in fractions.items())
        shares = " / ".join(f"{max(size, 0)} {name}" for name, size in sizes.items())
        raise ConfigError(
            f"{where}: {given} split the {len(distinct)} {unit} into {shares}; every split needs at least 1 "
            f"(the {rest} split takes what the others leave)"
        )
    order = torch.randperm(len(distinct), generator=torch.Generator().manual_seed(seed)).tolist()
    ranked = [name for name, size in sizes.items() for _ in range(size)]
    split_of_unit = {distinct[index]: ranked[rank] for rank, index in enumerate(order)}
    return [split_of_unit[u] for u in units]


def file_fingerprint(path: Path, suffixes: Sequence[str]) -> list:
    """What a cached decode depends on: a file's size and modification time, or those of a folder's image files."""
    if path.is_file():
        stat = path.stat()
        return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes)
    stats = [(p.relative_to(path).as_posix(), p.stat()) for p in files]
    return [str(path.resolve()), [(name, stat.st_size, stat.st_mtime_ns) for name, stat in stats]]


def cached_arrays(prefix: str, key: Mapping, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays ``build()`` returns, decoded once and kept in ``cache_dir()`` under a hash of ``key``."""
    path = cache_dir() / f"{prefix}-{stable_hash(dict(key))}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}
    arrays = build()
    atomic_write(path, lambda handle: np.savez(handle, **arrays), mode="wb")  # a concurrent run never reads half
    return arrays


def stack_classes(per_class: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Class arrays ``[n_i, C, H, W]`` as one zero-padded ``[classes, max n_i, C, H, W]`` and the counts ``n_i``."""
    counts = np.array([len(images) for images in per_class], dtype=np.int64)
    stacked = np.zeros((len(per_class), int(counts.max()), *per_class[0].shape[1:]), dtype=np.uint8)
    for index, images in enumerate(per_class):
        stacked[index, : len(images)] = images
    return stacked, counts


def image_split(images: np.ndarray, counts: np.ndarray, names: Sequence[str]) -> ImageSplit:
    """An :class:`ImageSplit` whose ``counts`` is kept only when the classes are really ragged."""
    ragged = len(counts) > 0 and int(counts.min()) != images.shape[1]
    return ImageSplit(
        torch.from_numpy(np.ascontiguousarray(images)),
        tuple(str(name) for name in names),
        torch.from_numpy(counts) if ragged else None,
    )


@dataclass(frozen=True)
class ImageDataset:
    """A classification dataset: its three class-disjoint splits and, optionally, fixed evaluation tasks."""

    name: str
    splits: Mapping[str, ImageSplit]
    fixed_tasks: Mapping[str, TaskBatch] = field(default_factory=dict)
    task_type: Literal["classification"] = "classification"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.splits["train"].image_shape

    def split(self, name: SplitName) -> ImageSplit:
        if name not in self.splits:
            raise ConfigError(f"dataset '{self.name}': no split '{name}'; splits: {', '.join(self.splits)}")
        return self.splits[name]

    def evaluation_tasks(self, split: SplitName) -> TaskBatch | None:
        return self.fixed_tasks.get(split)
