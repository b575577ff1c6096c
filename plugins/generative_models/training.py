"""What every built-in generative model shares: minibatches, seeded initialisation, the training parameters, and the
on-disk cache of trained models.

A model is trained once per (dataset, split, model name and resolved parameters, seed) and cached under
``<cache_dir>/generative-models/`` as ``<name>-<key>.pt`` (the ``state_dict``) and ``<name>-<key>.json`` (the
training curve and what the key was made of). Both are written to a temporary file and renamed, so a crash never
leaves half a file; the JSON is written last and marks the entry complete.

A third-party plugin can register a pretrained model: its factory loads the weights, its ``fit`` returns ``[]``
(nothing was trained, so nothing is cached) and ``sample_prior``/``decode`` (and ``encode`` if it has one) work at
once; a ``pretrained = True`` attribute keeps the dry run from listing it among the models to train. Register it with
``register("my-gan", MyPretrainedGan, summary=...)`` in a ``metabench_register_generative_models`` hook and pick it
with ``model = "my-gan"`` in a LASIUM sampler's parameters.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from metabench import Param, atomic_write, derive_seed, stable_hash
from metabench.interfaces import GenerativeModel

# Bump when a built-in architecture or training loop changes, so that old cache entries are not reused.
CACHE_FORMAT = 1


def training_params(epochs: int, batch_size: int, lr: float, paper: str, batch_note: str) -> tuple[Param, ...]:
    """The parameters of the training loop, with a model's defaults and what its paper used."""
    return (
        Param("epochs", int, epochs, f"training epochs over the unlabelled images (paper: {paper})", low=1),
        Param("batch_size", int, batch_size, f"images per training step ({batch_note})", low=1),
        Param("lr", float, lr, "Adam learning rate", low=0.0),
    )


def as_unit_float(images: Tensor) -> Tensor:
    """``uint8`` images as ``float32`` in ``[0, 1]`` (float images are taken to be in that range already)."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


def minibatches(n: int, batch_size: int, rng: torch.Generator, device: torch.device) -> Iterator[Tensor]:
    """Indices of one epoch in random order, ``batch_size`` at a time (the last batch may be smaller)."""
    order = torch.randperm(n, generator=rng, device=rng.device).to(device)
    yield from order.split(batch_size)


def epochs_bar(epochs: int, progress: bool, description: str) -> tqdm:
    return tqdm(range(epochs), desc=description, unit="epoch", disable=not progress, leave=False)


def reinitialise(module: nn.Module, rng: torch.Generator) -> None:
    """Draw ``module``'s initial weights from ``rng`` (layer initialisers only read the global generator, so seed a
    forked copy of it)."""
    seed = int(torch.randint(0, 2**62, (), generator=rng, device=rng.device))
    cuda_devices = sorted({p.device.index or 0 for p in module.parameters() if p.is_cuda})
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        for layer in module.modules():
            if layer is not module and hasattr(layer, "reset_parameters"):
                layer.reset_parameters()


class ImageModel(nn.Module):
    """The frame of the built-in models: the image shape, the latent size, the training settings, where the decoder
    starts (``width`` maps of a quarter of the image's height and width, rounded up, so that two stride-2 upsamplings
    reach at least the image size; LASIUM Sec. 7.1), the ``N(0, I)`` prior and the crop of the decoded excess."""

    def __init__(
        self, image_shape: tuple[int, ...], *, latent_dim: int, width: int, epochs: int, batch_size: int, lr: float
    ):
        super().__init__()
        _, height, width_px = image_shape
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        self.epochs, self.batch_size, self.lr = epochs, batch_size, lr
        self.base = (width, math.ceil(height / 4), math.ceil(width_px / 4))
        self.history: dict[str, list[float]] = {}

    def sample_prior(self, n: int, rng: torch.Generator) -> Tensor:
        """``n`` draws of the standard normal prior, taken from ``rng`` on its own device, moved to the model's."""
        device = next(self.parameters()).device
        return torch.randn(n, self.latent_dim, generator=rng, device=rng.device).to(device)

    def crop(self, images: Tensor) -> Tensor:
        """Decoded ``[n, C, H', W']`` (``H' >= H``, ``W' >= W``) cut to the image size."""
        _, height, width = self.image_shape
        return images[:, :, :height, :width]


def _cache_folder(cache_dir: Path) -> Path:
    return cache_dir / "generative-models"


def seconds_to_train(cache_dir: Path, name: str, key_parts: Mapping[str, Any]) -> list[float]:
    """How long each model ``name`` cached with these ``key_parts`` (any seed) took to train on this machine."""
    wanted = json.loads(json.dumps(dict(key_parts), default=str))  # as the cache entries hold them
    took = []
    for path in sorted(_cache_folder(cache_dir).glob(f"{name}-*.json")):
        entry = json.loads(path.read_text())
        if entry.get("name") == name and all(entry.get(key) == value for key, value in wanted.items()):
            took.append(float(entry["train_seconds"]))
    return took


def fit_or_load(
    model: GenerativeModel,
    images: Tensor,
    *,
    cache_dir: Path,
    key_parts: Mapping[str, Any],
    name: str,
    seed: int,
    progress: bool,
    train: bool = True,
) -> list[float]:
    """Load ``model``'s weights from the cache entry of ``key_parts``, or train it on ``images`` and store it.

    Returns the training curve (the cached one when loaded; none when not cached and not ``train``) and leaves the
    model on ``images``' device in eval mode.
    ``images`` are ``uint8 [N, C, H, W]`` on the device the model is trained on.
    """
    model.to(images.device)
    key = stable_hash({"format": CACHE_FORMAT, "name": name, "seed": seed, **key_parts})
    folder = _cache_folder(cache_dir)
    weights, record = folder / f"{name}-{key}.pt", folder / f"{name}-{key}.json"
    if record.exists() and weights.exists():
        model.load_state_dict(torch.load(weights, map_location=images.device, weights_only=True))
        model.eval()
        return list(json.loads(record.read_text())["curve"])
    if not train:
        model.eval()
        return []

    rng = torch.Generator().manual_seed(derive_seed(seed, "generator", name))
    started = time.perf_counter()
    curve = model.fit(images, rng, progress)
    model.eval()
    if not curve:  # a pretrained generator: nothing was trained, nothing to cache
        return curve
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(weights, lambda handle: torch.save(model.state_dict(), handle), mode="wb")
    entry = {
        "name": name,
        "seed": seed,
        **key_parts,
        "curve": curve,
        "history": getattr(model, "history", {}),
        "train_seconds": round(time.perf_counter() - started, 2),
        "n_images": int(images.shape[0]),
    }
    atomic_write(record, lambda handle: handle.write(json.dumps(entry, indent=1, default=str)))
    return curve
