"""A user's own images: ``root/<class>/<image>`` or ``root/<group>/<class>/<image>`` (miniImageNet-style folders)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metabench import ConfigError, Param, parameters
from metabench.interfaces import SplitName
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

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
NAMED_SPLITS = ("train", "val", "test")
_DECODER_VERSION = 1
_WHERE = "dataset 'image-folder'"


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return [p for p in _visible(folder) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def scan_classes(root: Path) -> dict[str, list[Path]]:
    """Class name (``<class>`` or ``<group>/<class>``) to its image files; every class must hold an image."""
    if not root.is_dir():
        raise ConfigError(f"{_WHERE}: root = '{root}' is not an existing folder")
    top = [p for p in _visible(root) if p.is_dir()]
    if not top:
        raise ConfigError(f"{_WHERE}: root = '{root}' holds no class folders; expected root/<class>/<image>")
    classes: dict[str, list[Path]] = {}
    layouts = set()
    for folder in top:
        subfolders = [p for p in _visible(folder) if p.is_dir()]
        images = _images_in(folder)
        if subfolders and images:
            raise ConfigError(f"{_WHERE}: {folder} holds both images and folders; a folder is a class or a group")
        layouts.add("group" if subfolders else "class")
        for class_folder in subfolders or [folder]:
            files = _images_in(class_folder)
            if not files:
                raise ConfigError(
                    f"{_WHERE}: class folder {class_folder} holds no images (suffixes {', '.join(IMAGE_SUFFIXES)})"
                )
            classes[str(class_folder.relative_to(root).as_posix())] = files
    if len(layouts) > 1:
        raise ConfigError(
            f"{_WHERE}: root = '{root}' mixes class folders and group folders; use root/<class>/<image> or "
            "root/<group>/<class>/<image> throughout"
        )
    return classes


def _decode(classes: dict[str, list[Path]], image_size: int, channels: int) -> dict[str, np.ndarray]:
    names = sorted(classes)
    per_class = [
        np.stack(
            [decode_image(f, size=image_size, channels=channels, invert=False, source=f"{_WHERE}: {f}") for f in files]
        )
        for files in (classes[name] for name in names)
    ]
    images, counts = stack_classes(per_class)
    return {"images": images, "counts": counts, "names": np.array(names)}


def _split_units(names: list[str], split_by: str, root: Path) -> tuple[str, list[str]]:
    """How classes are grouped for the split: ``named`` (groups are the splits), ``group`` or ``class``."""
    grouped = all("/" in name for name in names)
    groups = sorted({name.split("/")[0] for name in names}) if grouped else []
    if split_by == "auto":
        split_by = "named" if groups == sorted(NAMED_SPLITS) else "class"
    if split_by in ("named", "group") and not grouped:
        raise ConfigError(f"{_WHERE}: split_by = '{split_by}' needs root/<group>/<class>/<image>; {root} has no groups")
    if split_by == "named" and groups != sorted(NAMED_SPLITS):
        raise ConfigError(
            f"{_WHERE}: split_by = 'named' needs exactly the group folders {', '.join(NAMED_SPLITS)} in {root}; "
            f"found {', '.join(groups)}"
        )
    return split_by, [name.split("/")[0] for name in names] if split_by != "class" else names


@parameters(
    Param("root", str, None, "the image folder (required)", nullable=True),
    Param("image_size", int, 84, "side of the square images after resizing", low=4, high=1024),
    Param("channels", int, 3, "1: grayscale, 3: RGB", choices=(1, 3)),
    Param(
        "split_by",
        str,
        "auto",
        "named: groups train/val/test are the splits; class/group: random split by fractions; auto: named when "
        "possible, else class",
        choices=("auto", "named", "class", "group"),
    ),
    fraction_param("train_fraction", 0.6, "classes (or groups)"),
    fraction_param("val_fraction", 0.2, "classes (or groups)"),
    SEED_PARAM,
)
def image_folder(
    *,
    root: str | None,
    image_size: int,
    channels: int,
    split_by: str,
    train_fraction: float,
    val_fraction: float,
    seed: int,
) -> ImageDataset:
    """Images from ``root/<class>/<image>`` or ``root/<group>/<class>/<image>``, resized (Lanczos) to
    ``image_size`` x ``image_size`` with 1 (grayscale) or 3 (RGB) ``channels``, stored as ``uint8``.

    Classes may hold different numbers of images (samplers draw only real images). Files with other suffixes than
    the usual image ones and hidden files are ignored. ``split_by``: ``named`` takes the groups ``train``, ``val``
    and ``test`` as the splits (miniImageNet-style); ``class`` or ``group`` split classes or whole groups at random
    (``seed``) by ``train_fraction`` and ``val_fraction`` (meta-test takes the rest); ``auto`` is ``named`` when the
    groups are exactly train/val/test and ``class`` otherwise. Decoded images are cached in
    ``metabench.cache.cache_dir()``, keyed by the files' names, sizes and modification times.
    """
    if root is None:
        raise ConfigError(f"{_WHERE}: parameter 'root' is required: a folder of <class>/<image> or <group>/<class>/...")
    folder = Path(root).expanduser()
    classes = scan_classes(folder)
    key = {
        "decoder": _DECODER_VERSION,
        "image_size": image_size,
        "channels": channels,
        "files": file_fingerprint(folder, IMAGE_SUFFIXES),
    }
    arrays = cached_arrays("image-folder", key, lambda: _decode(classes, image_size, channels))
    names = [str(n) for n in arrays["names"]]
    mode, units = _split_units(names, split_by, folder)
    if mode == "named":
        assigned: list[str] = units  # the groups, checked to be exactly the split names
    else:
        fractions: dict[SplitName, float] = {"train": train_fraction, "val": val_fraction}
        assigned = list(assign_splits(units, fractions, "test", seed, unit=f"{mode}s", where=_WHERE))
    splits = {}
    for split in NAMED_SPLITS:
        chosen = [i for i, name in enumerate(assigned) if name == split]
        splits[split] = image_split(arrays["images"][chosen], arrays["counts"][chosen], [names[i] for i in chosen])
    return ImageDataset("image-folder", splits)
