"""The interface of each component kind: what a factory registered through a hook must return.

These are structural (``typing.Protocol``): a plugin needs no base class, only these attributes and methods.
All randomness comes from explicit ``torch.Generator`` arguments; the same generator state gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from metabench.tasks import MixPlan, OuterBatch, TaskBatch, TaskShape

if TYPE_CHECKING:
    from metabench.registry import Registry

Params = dict[str, Tensor]
SplitName = Literal["train", "val", "test"]
TaskType = Literal["classification", "regression"]


# ----------------------------------------------------------------------------------------------------------- datasets
@dataclass(frozen=True)
class ImageSplit:
    """A split of an image dataset as one dense tensor: ``images uint8 [classes, examples, C, H, W]``.

    ``counts [classes]`` holds the real number of examples per class when classes are ragged (the tail of a shorter
    class is padding that samplers never draw); ``None`` means every class has ``examples`` images.
    """

    images: Tensor
    class_names: tuple[str, ...]
    counts: Tensor | None = None

    @property
    def n_classes(self) -> int:
        return self.images.shape[0]

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[2:])

    def min_examples(self) -> int:
        return int(self.counts.min()) if self.counts is not None else self.images.shape[1]

    def to(self, device: torch.device | str) -> ImageSplit:
        counts = self.counts.to(device) if self.counts is not None else None
        return replace(self, images=self.images.to(device), counts=counts)


@runtime_checkable
class RegressionFamily(Protocol):
    """A family of regression tasks (e.g. sinusoids): every call draws fresh tasks."""

    x_dim: int
    y_dim: int

    def sample(
        self, n_tasks: int, n_support: int, n_query: int, generator: torch.Generator, device: torch.device
    ) -> TaskBatch:
        """``n_tasks`` tasks of ``n_support`` support and ``n_query`` query points (``n_way=None``)."""
        ...


Split = ImageSplit | RegressionFamily


class Dataset(Protocol):
    """What a dataset factory returns."""

    task_type: TaskType
    input_shape: tuple[int, ...]  # per example, e.g. (1, 28, 28) or (1,)

    def split(self, name: SplitName) -> Split:
        """The meta-train, meta-validation or meta-test split (classes of different splits are disjoint)."""
        ...

    def evaluation_tasks(self, split: SplitName) -> TaskBatch | None:
        """A fixed evaluation protocol of the dataset itself (e.g. Lake's 20 one-shot runs), or ``None``."""
        ...


# ----------------------------------------------------------------------------------------------------------- samplers
TaskSource = Callable[[int, torch.Generator], TaskBatch]
"""Draws ``n`` tasks (on the run's device) from a generator: ``source(n, generator) -> TaskBatch``."""


@dataclass(frozen=True)
class SamplerContext:
    """What a sampler may need beyond the split: where to put tensors and caches, and the other components."""

    device: torch.device
    seed: int
    cache_dir: Path
    dataset_key: str  # stable identifier of (dataset, params), for caches
    registry: Registry | None = None
    progress: bool = True
    options: dict[str, Any] = field(default_factory=dict)
    # preflight and the dry run bind to check and to time steps: what the run itself will train once and cache (a
    # LASIUM sampler's generative model) stays untrained, or a dry run of a paper profile would train it for hours
    checking: bool = False
    # what a checking bind left untrained for want of a cached copy, one name each ("generative model 'gan' (seed
    # 0)"): the runs will train it first, and the dry run says so beside its estimate, which leaves that time out
    left_untrained: list[str] = field(default_factory=list)


class TaskSampler(Protocol):
    """What a sampler factory returns."""

    def bind(self, split: Split, shape: TaskShape, context: SamplerContext, *, role: SplitName) -> TaskSource:
        """Prepare to draw tasks of ``shape`` from ``split`` (move data to the device, fix label sets, train a
        generative model...). ``role`` says whether the tasks are for meta-training or evaluation. Raises
        :class:`metabench.errors.ConfigError` when the split cannot give such tasks (too few classes or examples)."""
        ...


# ---------------------------------------------------------------------------------------------------------- backbones
class Backbone(Protocol):
    """An ``nn.Module`` (built by ``factory(input_shape=..., out_dim=..., **params)``) split at its mixable layers.

    Layer 0 is the input; layer ``l`` (1 ≤ l ≤ n_layers − 1) the output of block ``l``; layer ``n_layers − 1`` is the
    representation the head reads. ``forward(h, start, stop)`` runs blocks ``start+1 .. stop`` on a batch ``h`` without
    task dimension (``stop=None``: through the head, giving ``[B, out_dim]``). It is pure in its parameters, so
    ``torch.func.functional_call(backbone, params, (h,), {"start": l})`` works with fast weights and under ``vmap``.
    Normalisation uses the statistics of the batch it is given (no running statistics), as in MAML.
    """

    n_layers: int
    head_prefix: str  # parameters whose names start with this form the head (ANIL adapts only these)

    def forward(self, h: Tensor, start: int = 0, stop: int | None = None) -> Tensor: ...

    def named_parameters(self, *args: Any, **kwargs: Any) -> Any: ...


# ---------------------------------------------------------------------------------------------------------- strategies
Encode = Callable[[Tensor, int], Tensor]
"""``encode(x, l)``: the hidden batch at mixable layer ``l`` of ``x [B, *x_shape]`` under the task's fast weights."""


class Strategy(Protocol):
    """An outer-loop data strategy: decides what the outer loss of each task is computed on.

    Randomness is drawn once per meta-batch by :meth:`plan` (outside ``vmap``); :meth:`apply` is pure tensor code on
    one task, so a learner may ``vmap`` it over tasks or loop.
    """

    plain: bool  # True only for the strategy that leaves an algorithm as published (outer loss on the query set)

    def plan(self, rng: torch.Generator, tasks: TaskBatch, n_layers: int) -> MixPlan:
        """Draw the meta-batch's random choices: mixing layer, per-sample λ, pairings (tensors on tasks.device)."""
        ...

    def apply(
        self, plan: MixPlan, encode: Encode, support_x: Tensor, support_t: Tensor, query_x: Tensor, query_t: Tensor
    ) -> OuterBatch:
        """One task: the hidden batch and soft targets the outer loss is computed on. ``*_t`` are soft targets
        (one-hot ``[B, n_way]`` or regression ``[B, D]``); ``plan`` is this task's slice."""
        ...

    def refine(self, plan: MixPlan, heldout_loss: Callable[[MixPlan], Tensor]) -> MixPlan:
        """Optionally improve the plan before the outer loss (learned-λ strategies); most return ``plan``.

        ``heldout_loss(plan)`` is differentiable w.r.t. the plan's tensors: the loss on held-out data (the query set)
        after a one-step lookahead update of the fast weights on the outer batch the plan produces.
        """
        ...


# ---------------------------------------------------------------------------------------------------------- learners
class MetaLearner(Protocol):
    """What a learner factory returns. The runner owns the outer optimiser (Adam over the meta-parameters)."""

    meta_trains: bool  # False for baselines that only train on each support set (``scratch``)

    def init_params(self, backbone: nn.Module, generator: torch.Generator) -> Params:
        """Bind to ``backbone`` and return the meta-parameters: leaf tensors with ``requires_grad``."""
        ...

    def incompatible(self, strategy: Strategy, strategy_name: str, task_type: TaskType) -> str | None:
        """``None`` if this learner can use ``strategy`` on tasks of ``task_type``, else the reason (the run is then
        recorded as "not applicable" without being built). The only way a learner declines a run."""
        ...

    def meta_loss(
        self, params: Params, tasks: TaskBatch, strategy: Strategy, rng: torch.Generator
    ) -> tuple[Tensor, dict[str, float]]:
        """The outer loss averaged over tasks and metrics to log.

        The contract: the runner calls ``loss.backward()`` once, and the gradient it leaves on each meta-parameter
        is the meta-gradient (``torch.autograd.grad(loss, params)`` gives the same). That one first-order
        differentiation is all a loss has to support: a learner may take the meta-gradient itself while it computes
        the loss and return a loss whose backward only delivers it (the per-task loop of
        :class:`metabench.learning.OuterObjective` does, to free each task's graph as soon as its loss is known),
        so a second backward, ``retain_graph`` and ``create_graph`` (derivatives of the meta-gradient) are not
        promised. The value is the same in any grad mode; under ``torch.no_grad`` no gradient is computed."""
        ...

    def evaluate(self, params: Params, tasks: TaskBatch) -> dict[str, Tensor]:
        """Per-task scores ``[T]``: ``"pre"`` and ``"post"`` adaptation accuracy on the query set (classification)
        or MSE (regression), and ``"train_pre"``/``"train_post"`` on the support set."""
        ...

    def diagnostics(self, params: Params, tasks: TaskBatch) -> dict[str, float]:
        """Meta-overfitting analyses on ``tasks``: ``grad_norm_support``/``grad_norm_query`` (norm of the outer-loss
        gradient w.r.t. the initialisation, computed on the support and on the query set) and
        ``top_singular_value`` (mean over tasks and classes of the largest singular value of the support
        representations before the head). Learners without a meaning for one leave it out."""
        ...


# ------------------------------------------------------------------------------------------------- generative models
class GenerativeModel(Protocol):
    """What a generative-model factory (``factory(image_shape=..., **params)``) returns; an ``nn.Module``, so that
    its trained weights can be cached. A pretrained one, whose ``fit`` trains nothing, may say so with an attribute
    ``pretrained = True``: the dry run then does not list it among the models the runs will train."""

    latent_dim: int
    can_encode: bool

    def fit(self, images: Tensor, rng: torch.Generator, progress: bool) -> list[float]:
        """Train on unlabelled ``images uint8 [N, C, H, W]``; return the training-loss curve (one value per epoch)."""
        ...

    def sample_prior(self, n: int, rng: torch.Generator) -> Tensor:
        """``n`` latent vectors ``[n, latent_dim]`` from the prior."""
        ...

    def decode(self, z: Tensor) -> Tensor:
        """Images ``float [n, C, H, W]`` in ``[0, 1]`` from latents ``[n, latent_dim]``."""
        ...

    def encode(self, x: Tensor) -> Tensor:
        """Latents of images ``float [n, C, H, W]`` in ``[0, 1]`` (only when ``can_encode``)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...
