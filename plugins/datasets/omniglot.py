"""Omniglot (Lake et al. 2015): the embedded background subsets, the full set from a user's path, and Lake's 20 runs.

Images are decoded to ``uint8 [1, S, S]`` with strokes bright (255) on a dark (0) background, the polarity of MAML's
Omniglot pipeline (which feeds ``1 - image``); the raw PNGs are black strokes on white.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from metabench import ConfigError, Param, TaskBatch, parameters
from metabench.interfaces import ImageSplit, SplitName
from metabench.plugins.datasets.common import (
    SEED_PARAM,
    ImageDataset,
    assign_splits,
    cached_arrays,
    decode_image,
    file_fingerprint,
    fraction_param,
    image_split,
    stack_classes,
)

DATA_DIR = Path(__file__).parent / "data"
EMBEDDED_BACKGROUND = (DATA_DIR / "images_background_small1.zip", DATA_DIR / "images_background_small2.zip")
LAKE_RUNS = DATA_DIR / "all_runs.zip"
_DECODER_VERSION = 1  # bump when decoding changes, so stale cache files are not reused
_RUN_FILE = re.compile(r"run(\d+)/(training/class|test/item)(\d+)\.png$")


def _png_members(source: Path, *, where: str) -> Iterator[tuple[tuple[str, ...], bytes]]:
    """``(path parts, file bytes)`` of every PNG in a zip file or folder."""
    if source.is_dir():
        for path in sorted(source.rglob("*.png")):
            yield path.relative_to(source).parts, path.read_bytes()
        return
    try:
        with zipfile.ZipFile(source) as archive:
            for name in sorted(n for n in archive.namelist() if n.endswith(".png")):
                yield tuple(name.split("/")), archive.read(name)
    except zipfile.BadZipFile as error:
        raise ConfigError(f"{where}: {source} is not a readable zip file ({error})") from error


def _decode_characters(sources: Sequence[Path], image_size: int, where: str) -> dict[str, np.ndarray]:
    """Every character of ``sources`` (``.../<Alphabet>/<character>/<drawer>.png``) as padded arrays.

    A character present in several sources (Greek and Latin are in both embedded subsets) is taken from the first.
    """
    characters: dict[str, dict[str, bytes]] = {}
    for source in sources:
        found: dict[str, dict[str, bytes]] = {}
        for parts, data in _png_members(source, where=where):
            if len(parts) < 3:
                raise ConfigError(f"{where}: {source}/{'/'.join(parts)} is not in <alphabet>/<character>/<image>.png")
            found.setdefault(f"{parts[-3]}/{parts[-2]}", {})[parts[-1]] = data
        if not found:
            raise ConfigError(f"{where}: {source} holds no PNG images")
        for key, drawers in found.items():
            characters.setdefault(key, drawers)
    names = sorted(characters)
    per_class = [
        np.stack(
            [
                decode_image(data, size=image_size, channels=1, invert=True, source=f"{where}: {key}/{file}")
                for file, data in sorted(characters[key].items())
            ]
        )
        for key in names
    ]
    images, counts = stack_classes(per_class)
    return {"images": images, "counts": counts, "names": np.array(names)}


def load_characters(sources: Sequence[Path], image_size: int, where: str) -> dict[str, np.ndarray]:
    """The decoded characters of ``sources``, from the cache when they were decoded before."""
    key = {
        "decoder": _DECODER_VERSION,
        "image_size": image_size,
        "sources": [file_fingerprint(s, (".png",)) for s in sources],
    }
    return cached_arrays("omniglot", key, lambda: _decode_characters(sources, image_size, where))


def root_sources(root: str, *, background_only: bool, where: str) -> list[Path]:
    """The ``images_background`` / ``images_evaluation`` folders or zip files of a full Omniglot at ``root``."""
    path = Path(root).expanduser()
    expected = "a folder holding images_background and images_evaluation (unzipped folders or .zip files)"
    if not path.is_dir():
        raise ConfigError(f"{where}: root = '{root}' is not an existing folder; expected {expected}")
    by_stem: dict[str, Path] = {}
    for entry in sorted(path.iterdir()):
        if entry.name.startswith("images_") and (entry.is_dir() or entry.suffix == ".zip"):
            stem = entry.name.removesuffix(".zip")
            if entry.is_dir() or stem not in by_stem:  # an unzipped folder wins over its zip
                by_stem[stem] = entry
    wanted = [p for stem, p in sorted(by_stem.items()) if not background_only or stem.startswith("images_background")]
    if not wanted:
        raise ConfigError(f"{where}: root = '{root}' holds no images_background* folder or zip; expected {expected}")
    return wanted


def character_splits(
    characters: dict[str, np.ndarray],
    *,
    fractions: dict[SplitName, float],
    rest: SplitName,
    split_by: str,
    seed: int,
    rotations: bool,
    where: str,
) -> dict[str, ImageSplit]:
    """Characters assigned to splits by character or by whole alphabet; rotated copies stay in their split."""
    names = [str(n) for n in characters["names"]]
    units = names if split_by == "character" else [n.split("/")[0] for n in names]
    assigned = assign_splits(units, fractions, rest, seed, unit=f"{split_by}s", where=where)
    splits = {}
    for split in (*fractions, rest):
        chosen = [i for i, name in enumerate(assigned) if name == split]
        images, counts = characters["images"][chosen], characters["counts"][chosen]
        class_names = [names[i] for i in chosen]
        if rotations:
            images = np.concatenate([np.rot90(images, k, axes=(-2, -1)) for k in range(4)])
            counts = np.tile(counts, 4)
            class_names += [f"{n}@rot{90 * k}" for k in (1, 2, 3) for n in class_names]
        splits[split] = image_split(images, counts, class_names)
    return splits


def _decode_lake_runs(image_size: int, where: str) -> dict[str, np.ndarray]:
    images: dict[tuple[int, str, int], np.ndarray] = {}
    answer_keys: dict[int, list[tuple[int, int]]] = {}
    with zipfile.ZipFile(LAKE_RUNS) as archive:
        for name in archive.namelist():
            if name.endswith("/class_labels.txt"):
                pairs = [line.split() for line in archive.read(name).decode().splitlines() if line.strip()]
                answer_keys[int(name.split("/")[0].removeprefix("run"))] = [
                    (_run_file(item, where)[2], _run_file(label, where)[2]) for item, label in pairs
                ]
            elif name.endswith(".png"):
                images[_run_file(name, where)] = decode_image(
                    archive.read(name), size=image_size, channels=1, invert=True, source=f"{where}: {name}"
                )
    runs = sorted(answer_keys)
    n_way = len(answer_keys[runs[0]])
    labels = np.full((len(runs), n_way), -1, dtype=np.int64)
    for row, run in enumerate(runs):
        for item, label in answer_keys[run]:
            labels[row, item - 1] = label - 1
    if (labels < 0).any():
        raise ConfigError(f"{where}: {LAKE_RUNS}: the answer keys do not label every test item")
    return {
        "support": np.stack([[images[r, "training/class", c] for c in range(1, n_way + 1)] for r in runs]),
        "query": np.stack([[images[r, "test/item", i] for i in range(1, n_way + 1)] for r in runs]),
        "labels": labels,
    }


def _run_file(name: str, where: str) -> tuple[int, str, int]:
    """``runNN/training/classMM.png`` or ``runNN/test/itemMM.png`` as ``(NN, kind, MM)``."""
    match = _RUN_FILE.search(name)
    if match is None:
        raise ConfigError(f"{where}: {LAKE_RUNS}: unexpected entry '{name}'")
    return int(match[1]), match[2], int(match[3])


def lake_runs(image_size: int, where: str) -> dict[str, np.ndarray]:
    """Lake et al.'s 20 official 20-way one-shot runs as ``support``/``query`` ``uint8 [runs, 20, 1, S, S]``
    (support ``k`` is ``class{k+1}``, queries are ``item01..item20``) and ``labels [runs, 20]`` from the answer keys."""
    key = {"decoder": _DECODER_VERSION, "image_size": image_size, "runs": file_fingerprint(LAKE_RUNS, (".zip",))}
    return cached_arrays("omniglot-lake-runs", key, lambda: _decode_lake_runs(image_size, where))


def _runs_as_tasks(runs: dict[str, np.ndarray]) -> TaskBatch:
    support, query = (torch.from_numpy(runs[k]).float().div_(255) for k in ("support", "query"))
    n_runs, n_way = runs["labels"].shape
    return TaskBatch(support, torch.arange(n_way).repeat(n_runs, 1), query, torch.from_numpy(runs["labels"]), n_way)


def _runs_as_split(runs: dict[str, np.ndarray]) -> ImageSplit:
    """Each run's class as a class of two images: its one-shot example and the test item labelled with it."""
    query_by_class = np.take_along_axis(runs["query"], runs["labels"].argsort(axis=1)[:, :, None, None, None], axis=1)
    pairs = np.stack([runs["support"], query_by_class], axis=2)
    n_runs, n_way = runs["labels"].shape
    names = [f"run{r + 1:02d}/class{c + 1:02d}" for r in range(n_runs) for c in range(n_way)]
    return image_split(pairs.reshape(n_runs * n_way, *pairs.shape[2:]), np.full(n_runs * n_way, 2), names)


def _sources(root: str | None, *, background_only: bool, where: str) -> list[Path]:
    return (
        list(EMBEDDED_BACKGROUND) if root is None else root_sources(root, background_only=background_only, where=where)
    )


_COMMON_PARAMS = (
    Param("image_size", int, 28, "side of the square images after resizing (MAML/MetaMix: 28)", low=4, high=105),
    Param("rotations", bool, False, "add each character rotated by 90/180/270 degrees as 3 new classes"),
    Param(
        "split_by",
        str,
        "character",
        "assign single characters or whole alphabets to splits",
        choices=("character", "alphabet"),
    ),
)


@parameters(
    *_COMMON_PARAMS,
    fraction_param("train_fraction", 0.6, "characters (or alphabets)"),
    fraction_param("val_fraction", 0.2, "characters (or alphabets)"),
    SEED_PARAM,
    Param(
        "root",
        str,
        None,
        "folder of the full Omniglot (images_background/images_evaluation, folders or zips); none: the embedded "
        "subsets",
        nullable=True,
    ),
)
def omniglot(
    *,
    image_size: int,
    rotations: bool,
    split_by: str,
    train_fraction: float,
    val_fraction: float,
    seed: int,
    root: str | None,
) -> ImageDataset:
    """Omniglot handwritten characters; one class per character, one example per drawer.

    Without ``root``: the embedded background subsets "small 1" and "small 2" of github.com/brendenlake/omniglot (MIT;
    Lake, Salakhutdinov & Tenenbaum 2015, Science), 242 distinct characters x 20 drawers. With ``root``: every
    character of the full Omniglot found there (``images_background`` and ``images_evaluation``, folders or zips).

    Images are ``uint8 [1, image_size, image_size]``, Lanczos-resized, strokes bright on black. Characters (or
    whole alphabets, ``split_by="alphabet"``) are split at random (``seed``) into meta-train, meta-val and meta-test
    by ``train_fraction`` and ``val_fraction`` (meta-test takes the rest). ``rotations`` adds each character rotated
    by 90, 180 and 270 degrees as three new classes of the same split. Decoded images are cached as an ``.npz`` in
    ``metabench.cache.cache_dir()``.
    """
    where = "dataset 'omniglot'"
    characters = load_characters(_sources(root, background_only=False, where=where), image_size, where)
    splits = character_splits(
        characters,
        fractions={"train": train_fraction, "val": val_fraction},
        rest="test",
        split_by=split_by,
        seed=seed,
        rotations=rotations,
        where=where,
    )
    return ImageDataset("omniglot", splits)


@parameters(
    *_COMMON_PARAMS,
    fraction_param("val_fraction", 0.2, "background characters (or alphabets)"),
    SEED_PARAM,
    Param(
        "root",
        str,
        None,
        "folder holding the full images_background (folder or zip); none: the embedded subsets",
        nullable=True,
    ),
)
def omniglot_lake20(
    *, image_size: int, rotations: bool, split_by: str, val_fraction: float, seed: int, root: str | None
) -> ImageDataset:
    """Omniglot with Lake et al.'s fixed test protocol: the 20 official 20-way one-shot runs (``all_runs.zip``).

    Meta-train and meta-val are the background characters (embedded subsets, or ``images_background`` under
    ``root``), split by ``val_fraction`` as in ``omniglot``. ``evaluation_tasks("test")`` is the 20 runs: 20 tasks of
    20 one-shot support images (label k for ``classK+1``) and 20 queries labelled by each run's answer key; accuracy
    on them is accuracy on exactly Lake's 400 queries. ``split("test")`` holds the runs as 400 two-image classes (a
    character may recur across runs, so tasks drawn from it are not guaranteed to be mutually exclusive).
    """
    where = "dataset 'omniglot-lake20'"
    characters = load_characters(_sources(root, background_only=True, where=where), image_size, where)
    splits = character_splits(
        characters,
        fractions={"val": val_fraction},
        rest="train",
        split_by=split_by,
        seed=seed,
        rotations=rotations,
        where=where,
    )
    runs = lake_runs(image_size, where)
    return ImageDataset("omniglot-lake20", {**splits, "test": _runs_as_split(runs)}, {"test": _runs_as_tasks(runs)})
