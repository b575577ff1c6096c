"""LASIUM (Khodadadeh et al., ICLR 2021, Algorithm 1): meta-training tasks generated in a generative model's latent
space, from unlabelled images.

Per task: ``N`` anchor latents at pairwise Euclidean distance ``>= epsilon`` (drawn from the prior, or encoded from
``N`` random unlabelled images when the generative model has an encoder), then ``K_tr + K_val - 1`` in-class latents per
anchor by one of three strategies: ``lasium-n`` adds noise, ``lasium-ro`` interpolates toward a random out-of-class
latent, ``lasium-oc`` toward another class's anchor. All latents of a meta-batch are decoded in one call; per class
the first ``K_tr`` images form the support set and the last ``K_val`` the query set.

The latent-space steps are plain functions (:func:`sample_anchors`, :func:`noise_latents`,
:func:`random_out_latents`, :func:`other_class_latents`) that work without decoding. LASIUM only makes
meta-training tasks: bound for evaluation, they draw standard tasks from the real labelled classes.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from metabench import ConfigError, Param, TaskBatch, TaskShape, parameters, stable_hash
from metabench.interfaces import GenerativeModel, ImageSplit, SamplerContext, Split, SplitName, TaskSource
from metabench.plugins.generative_models.training import as_unit_float, fit_or_load, seconds_to_train
from metabench.plugins.samplers.episodic import StandardSampler

InClassSampling = Literal["n", "ro", "oc"]
"""How in-class latents are drawn around an anchor: LASIUM-N, -RO or -OC."""
AnchorDraw = Callable[[int], tuple[Tensor, Tensor | None]]
"""``draw(t)``: ``t`` candidate anchor sets ``[t, N, d]`` and, when they encode real images, those images' indices
``[t, N]`` (else ``None``)."""

_ENCODE_CHUNK = 512


# ------------------------------------------------------------------------------------------------ latent-space steps
def closest_pair_distance(latents: Tensor) -> Tensor:
    """The smallest pairwise Euclidean distance within each set ``[T, N, d] -> [T]`` (``inf`` when ``N = 1``)."""
    distances = torch.cdist(latents, latents)
    diagonal = torch.eye(latents.shape[1], dtype=torch.bool, device=latents.device)
    return distances.masked_fill(diagonal, float("inf")).flatten(1).amin(dim=1)


@dataclass(frozen=True)
class Anchors:
    latents: Tensor  # [T, N, d]
    index: Tensor | None  # [T, N] indices of the encoded images, or None for prior anchors
    resamples: int  # candidate sets rejected (summed over tasks)


def sample_anchors(draw: AnchorDraw, n_tasks: int, epsilon: float, max_resamples: int, *, where: str) -> Anchors:
    """Anchor sets for ``n_tasks`` tasks whose latents are pairwise ``>= epsilon`` apart, by rejection sampling.

    All tasks draw at once; each round redraws only the tasks whose set had a closer pair. A task still failing after
    ``max_resamples`` redraws raises :class:`ConfigError` naming ``epsilon`` and the closest-pair distances seen.
    """
    latents, index = draw(n_tasks)
    closest = closest_pair_distance(latents)
    failing = closest < epsilon
    rejected = [closest[failing]]
    resamples = 0
    for _ in range(max_resamples):
        rows = failing.nonzero().squeeze(1)
        if len(rows) == 0:
            break
        new_latents, new_index = draw(len(rows))
        latents[rows] = new_latents
        if index is not None and new_index is not None:
            index[rows] = new_index
        new_closest = closest_pair_distance(new_latents)
        failing[rows] = new_closest < epsilon
        rejected.append(new_closest[new_closest < epsilon])
        resamples += len(rows)
    if failing.any():
        seen = torch.cat(rejected).float()
        raise ConfigError(
            f"{where}: found no {latents.shape[1]} anchors at pairwise distance >= epsilon = {epsilon:g} for "
            f"{int(failing.sum())} of {n_tasks} tasks within max_resamples = {max_resamples} redraws; the closest "
            f"pair of the {len(seen)} rejected draws was {float(seen.min()):.3g} to {float(seen.max()):.3g} apart "
            f"(median {float(seen.median()):.3g}): choose epsilon below about {float(seen.max()):.3g} or raise "
            "max_resamples"
        )
    return Anchors(latents, index, resamples)


def noise_latents(anchors: Tensor, n_new: int, std: float, rng: torch.Generator) -> Tensor:
    """LASIUM-N: ``z' = z + std · e``, ``e ~ N(0, I)``; ``[T, N, d] -> [T, N, n_new, d]``."""
    shape = (*anchors.shape[:2], n_new, anchors.shape[2])
    noise = torch.randn(shape, generator=rng, device=rng.device).to(anchors.device)
    return anchors.unsqueeze(2) + std * noise


def out_of_class_latents(
    anchors: Tensor, n_new: int, radius: float, prior: Callable[[int], Tensor], max_resamples: int, *, where: str
) -> Tensor:
    """Random latents ``v [T, N, n_new, d]`` from the prior at Euclidean distance ``>= radius`` from their anchor
    (LASIUM Sec. 3.1: "a random out-of-class sample"), by rejection; ``radius = 0`` accepts every draw."""
    n_tasks, n_way, dim = anchors.shape
    z = anchors.unsqueeze(2)
    fresh = prior(n_tasks * n_way * n_new).view(n_tasks, n_way, n_new, dim).clone()  # redrawn in place below
    inside = (fresh - z).norm(dim=-1) < radius
    for _ in range(max_resamples):
        if not inside.any():
            return fresh
        fresh[inside] = prior(int(inside.sum())).to(fresh.dtype)
        inside = (fresh - z).norm(dim=-1) < radius
    if inside.any():
        raise ConfigError(
            f"{where}: {int(inside.sum())} out-of-class latents still within out_of_class_radius = {radius:g} of "
            f"their anchor after max_resamples = {max_resamples} redraws: choose a smaller radius"
        )
    return fresh


def random_out_latents(anchors: Tensor, out_of_class: Tensor, alpha: float) -> Tensor:
    """LASIUM-RO: ``z' = z + alpha (v - z)`` for random out-of-class latents ``v [T, N, n_new, d]``."""
    z = anchors.unsqueeze(2)
    return z + alpha * (out_of_class - z)


def other_class_latents(anchors: Tensor, n_new: int, alpha: float, rng: torch.Generator) -> Tensor:
    """LASIUM-OC: ``z' = z_i + alpha (z_j - z_i)`` toward the anchor of a class ``j != i`` of the same task, drawn
    uniformly for each new latent; ``[T, N, d] -> [T, N, n_new, d]`` (needs ``N >= 2``)."""
    n_tasks, n_way, _ = anchors.shape
    offset = torch.randint(1, n_way, (n_tasks, n_way, n_new), generator=rng, device=rng.device).to(anchors.device)
    other = (torch.arange(n_way, device=anchors.device).view(1, n_way, 1) + offset) % n_way
    targets = anchors[torch.arange(n_tasks, device=anchors.device).view(n_tasks, 1, 1), other]
    z = anchors.unsqueeze(2)
    return z + alpha * (targets - z)


# ------------------------------------------------------------------------------------------------------ the sampler
def unlabelled_images(split: ImageSplit) -> Tensor:
    """Every real image of ``split`` without its label: ``[M, C, H, W]`` (the padding of ragged classes left out)."""
    if split.counts is None:
        return split.images.flatten(0, 1)
    present = torch.arange(split.images.shape[1], device=split.images.device) < split.counts.unsqueeze(1)
    return split.images[present]


@torch.no_grad()
def _encode_all(model: GenerativeModel, images: Tensor) -> Tensor:
    return torch.cat([model.encode(as_unit_float(chunk)) for chunk in images.split(_ENCODE_CHUNK)])


@dataclass
class LasiumSource:
    """The :data:`TaskSource` a bound LASIUM sampler returns; counts the anchor resamplings it needed."""

    model: GenerativeModel
    in_class_sampling: InClassSampling
    amount: float  # the noise's standard deviation for N, alpha for RO and OC
    shape: TaskShape
    epsilon: float
    out_of_class_radius: float
    max_resamples: int
    where: str
    images: Tensor | None  # the real images the anchors are encoded from, or None for prior anchors
    bank: Tensor | None  # their latents [M, d]
    model_curve: list[float]
    resamples: int = 0
    tasks_drawn: int = 0

    def draw_anchor_sets(self, n_tasks: int, rng: torch.Generator) -> Anchors:
        n_way = self.shape.n_way or 0
        if self.bank is None:

            def draw(t: int) -> tuple[Tensor, Tensor | None]:
                return self.model.sample_prior(t * n_way, rng).view(t, n_way, -1), None

        else:
            bank = self.bank

            def draw(t: int) -> tuple[Tensor, Tensor | None]:
                scores = torch.rand(t, len(bank), generator=rng, device=rng.device)
                index = scores.topk(n_way, dim=1).indices.to(bank.device)
                return bank[index], index

        return sample_anchors(draw, n_tasks, self.epsilon, self.max_resamples, where=self.where)

    def in_class(self, anchors: Tensor, n_new: int, rng: torch.Generator) -> Tensor:
        if self.in_class_sampling == "n":
            return noise_latents(anchors, n_new, self.amount, rng)
        if self.in_class_sampling == "ro":

            def prior(count: int) -> Tensor:
                return self.model.sample_prior(count, rng).to(anchors.device)

            out = out_of_class_latents(
                anchors, n_new, self.out_of_class_radius, prior, self.max_resamples, where=self.where
            )
            return random_out_latents(anchors, out, self.amount)
        return other_class_latents(anchors, n_new, self.amount, rng)

    @torch.no_grad()
    def __call__(self, n_tasks: int, rng: torch.Generator) -> TaskBatch:
        n_way, k_shot, k_query = self.shape.n_way or 0, self.shape.k_shot, self.shape.k_query
        per_class = k_shot + k_query
        anchors = self.draw_anchor_sets(n_tasks, rng)
        latents = torch.cat([anchors.latents.unsqueeze(2), self.in_class(anchors.latents, per_class - 1, rng)], 2)
        decoded = self.model.decode(latents.flatten(0, 2))
        images = decoded.float().view(n_tasks, n_way, per_class, *decoded.shape[1:])
        if anchors.index is not None and self.images is not None:  # paper Fig. 2: the anchor is the real image
            images[:, :, 0] = as_unit_float(self.images[anchors.index])
        self.resamples += anchors.resamples
        self.tasks_drawn += n_tasks

        labels = torch.arange(n_way, device=images.device).view(1, n_way, 1)
        return TaskBatch(
            support_x=images[:, :, :k_shot].flatten(1, 2).contiguous(),
            support_y=labels.expand(n_tasks, n_way, k_shot).flatten(1),
            query_x=images[:, :, k_shot:].flatten(1, 2).contiguous(),
            query_y=labels.expand(n_tasks, n_way, k_query).flatten(1),
            n_way=n_way,
        )


class LasiumSampler:
    """Binds to the meta-train split: trains (or loads from the cache) the generative model on its unlabelled images;
    evaluation tasks are the standard sampler's, on the real labelled classes."""

    def __init__(
        self,
        name: str,
        in_class_sampling: InClassSampling,
        amount: float,
        *,
        model: str,
        model_params: dict[str, Any],
        anchors: str,
        epsilon: float,
        max_resamples: int,
        out_of_class_radius: float | None = None,
    ):
        self.name, self.in_class_sampling, self.amount = name, in_class_sampling, amount
        self.model, self.model_params = model, dict(model_params)
        self.anchors, self.epsilon, self.max_resamples = anchors, epsilon, max_resamples
        self.out_of_class_radius = epsilon if out_of_class_radius is None else out_of_class_radius

    def bind(self, split: Split, shape: TaskShape, context: SamplerContext, *, role: SplitName) -> TaskSource:
        where = f"sampler '{self.name}'"
        if role != "train":  # LASIUM generates meta-training tasks only: evaluation is on the real labelled classes
            return StandardSampler().bind(split, shape, context, role=role)
        if not isinstance(split, ImageSplit) or shape.n_way is None:
            raise ConfigError(f"{where}: LASIUM generates classification tasks from images; this dataset has none")
        if shape.k_shot < 1 or shape.k_query < 1:
            raise ConfigError(f"{where}: k_shot = {shape.k_shot} and k_query = {shape.k_query}; both must be >= 1")
        if self.in_class_sampling == "oc" and shape.n_way < 2:
            raise ConfigError(
                f"{where}: n_way = {shape.n_way}, but LASIUM-OC interpolates toward other classes: it needs n_way >= 2"
            )

        registry = context.registry
        model_where = f"{where} model_params"
        model: GenerativeModel = registry.build(
            "generative-model", self.model, self.model_params, where=model_where, image_shape=split.image_shape
        )
        resolved = registry.get("generative-model", self.model).resolve(self.model_params, where=model_where)
        encoded = self.anchors == "encoded" or (self.anchors == "auto" and model.can_encode)
        if encoded and not model.can_encode:
            raise ConfigError(
                f"{where}: anchors = 'encoded', but generative model '{self.model}' has no encoder; "
                "use anchors = 'prior' or 'auto', or a model that can encode (e.g. 'vae')"
            )
        images = unlabelled_images(split).to(context.device)
        if encoded and len(images) < shape.n_way:
            raise ConfigError(f"{where}: {len(images)} images cannot give {shape.n_way} distinct encoded anchors")

        key_parts = {
            "dataset": context.dataset_key,
            "split": role,
            "classes": stable_hash(list(split.class_names)),
            "params": resolved,
        }
        curve = fit_or_load(
            model,
            images,
            cache_dir=context.cache_dir,
            key_parts=key_parts,
            name=self.model,
            seed=context.seed,
            progress=context.progress,
            train=not context.checking,
        )
        # a model left untrained by a checking bind puts every latent in one spot: no distance means anything there
        untrained = context.checking and not curve
        if untrained and not getattr(model, "pretrained", False):
            took = seconds_to_train(context.cache_dir, self.model, key_parts)
            context.left_untrained.append(_to_train(self.model, self.model_params, context.seed, took))
        return LasiumSource(
            model=model,
            in_class_sampling=self.in_class_sampling,
            amount=self.amount,
            shape=shape,
            epsilon=0.0 if untrained else self.epsilon,
            out_of_class_radius=0.0 if untrained else self.out_of_class_radius,
            max_resamples=self.max_resamples,
            where=where,
            images=images if encoded else None,
            bank=_encode_all(model, images) if encoded else None,
            model_curve=curve,
        )


def _to_train(model: str, params: dict[str, Any], seed: int, took: list[float]) -> str:
    """The dry run's line for a generative model a run will train first; ``took``: the seconds the same model on the
    same images took for other seeds (on this machine, unless the cache folder is shared)."""
    given = "".join(f" {key}={value}" for key, value in sorted(params.items()))
    line = f"generative model '{model}{given}' (seed {seed})"
    if not took:
        return line
    median = statistics.median(took)
    duration = f"{median:.0f} s" if median < 60 else f"{median / 60:.0f} min"
    return f"{line}: about {duration} (the median of {len(took)} other seed{'s' * (len(took) > 1)}, by the cache)"


# ----------------------------------------------------------------------------------------------------- factories
_COMMON_DOC = """
Anchors: 'auto' encodes random real images when the generative model has an encoder (the anchor's own image is then
the real one, paper Fig. 2), else draws from the prior. epsilon is a Euclidean distance between latents: N(0, I)
latents in d dimensions lie about sqrt(2d) apart (6.3 for d = 20, 16 for d = 128); the paper's Table 9 thresholds
(e.g. 187.5) are squared distances in a 128-d GAN latent. The model is trained once per (dataset, seed, model and its
parameters) on the meta-train images without labels and cached under the metabench cache folder.
"""

COMMON_PARAMS = (
    Param("model", str, "vae", "registered generative model trained on the unlabelled meta-train images"),
    Param("model_params", dict, {}, "parameters of the model (see `metabench describe generative-model NAME`)"),
    Param("anchors", str, "auto", "where anchors come from", choices=("auto", "prior", "encoded")),
    Param(
        "epsilon",
        float,
        0.0,
        "minimum Euclidean distance between a task's anchor latents (0: no rejection; its scale depends on the "
        "model's latent space)",
        low=0.0,
    ),
    Param("max_resamples", int, 1000, "redraws of a task's anchor set before giving up", low=0),
)


def _documented(factory: Callable[..., LasiumSampler]) -> Callable[..., LasiumSampler]:
    factory.__doc__ = f"{factory.__doc__}\n{__doc__}\n{_COMMON_DOC}"
    return factory


@_documented
@parameters(
    *COMMON_PARAMS,
    Param(
        "sigma",
        float,
        0.5,
        "scale of the in-class noise, read as sigma_is says (paper Table 7: 0.5 best on Omniglot)",
        low=0,
    ),
    Param(
        "sigma_is",
        str,
        "std",
        "how sigma is read: 'std', e ~ N(0, sigma^2 I), as the authors' Omniglot runs pass 0.5 to the noise's "
        "standard deviation; or 'variance', e ~ N(0, sigma I), the paper's notation N(0, sigma^2) with Table 7's "
        "value taken as sigma^2",
        choices=("std", "variance"),
    ),
)
def lasium_n(*, sigma: float, sigma_is: Literal["std", "variance"], **common: Any) -> LasiumSampler:
    """LASIUM-N: in-class latents ``z' = z + e``, ``e`` Gaussian with standard deviation ``sigma`` (or ``sqrt(sigma)``
    when ``sigma_is = 'variance'``)."""
    return LasiumSampler("lasium-n", "n", sigma if sigma_is == "std" else sigma**0.5, **common)


@_documented
@parameters(
    *COMMON_PARAMS,
    Param("alpha", float, 0.2, "interpolation fraction toward v (paper Table 7: 0.2 or 0.4)", low=0, high=1),
    Param(
        "out_of_class_radius",
        float,
        None,
        "v is redrawn from the prior while it lies within this Euclidean distance of the anchor, so that it is 'a "
        "random out-of-class sample' (paper Sec. 3.1); none = epsilon, the distance the paper itself takes to "
        "separate classes (anchors); 0 = no rejection, as the authors' code does",
        low=0,
        nullable=True,
    ),
)
def lasium_ro(*, alpha: float, out_of_class_radius: float | None, **common: Any) -> LasiumSampler:
    """LASIUM-RO: in-class latents ``z' = z + alpha (v - z)`` toward random out-of-class latents ``v`` from the
    prior, ``|v - z| >= out_of_class_radius``."""
    return LasiumSampler("lasium-ro", "ro", alpha, out_of_class_radius=out_of_class_radius, **common)


@_documented
@parameters(
    *COMMON_PARAMS,
    Param("alpha", float, 0.2, "interpolation fraction toward z_j (paper Table 7: 0.2 or 0.4)", low=0, high=1),
)
def lasium_oc(*, alpha: float, **common: Any) -> LasiumSampler:
    """LASIUM-OC: in-class latents ``z' = z_i + alpha (z_j - z_i)`` toward the anchor of another class of the task."""
    return LasiumSampler("lasium-oc", "oc", alpha, **common)
