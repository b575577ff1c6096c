"""Tensors with a task dimension: the data that flows between samplers, strategies and learners."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor


@dataclass(frozen=True)
class TaskShape:
    """The shape of a task: ``n_way`` classes (``None`` for regression), ``k_shot`` support and ``k_query`` query
    examples per class (for regression: support and query points per task)."""

    n_way: int | None
    k_shot: int
    k_query: int

    @property
    def support_size(self) -> int:
        return self.k_shot * (self.n_way or 1)

    @property
    def query_size(self) -> int:
        return self.k_query * (self.n_way or 1)


@dataclass(frozen=True)
class TaskBatch:
    """A meta-batch of ``T`` tasks.

    ``support_x [T, S, *x_shape]`` float32, ``support_y [T, S]`` int64 labels in ``[0, n_way)`` for classification or
    ``[T, S, D]`` float targets for regression; ``query_x [T, Q, *x_shape]``, ``query_y`` likewise.
    ``n_way`` is ``None`` for regression.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    n_way: int | None

    @property
    def n_tasks(self) -> int:
        return self.support_x.shape[0]

    @property
    def is_classification(self) -> bool:
        return self.n_way is not None

    @property
    def device(self) -> torch.device:
        return self.support_x.device

    def to(self, device: torch.device | str) -> TaskBatch:
        return replace(
            self,
            support_x=self.support_x.to(device),
            support_y=self.support_y.to(device),
            query_x=self.query_x.to(device),
            query_y=self.query_y.to(device),
        )

    def select(self, index: Tensor | slice | int) -> TaskBatch:
        """The tasks at ``index`` (an int keeps the task dimension, of size 1)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return replace(
            self,
            support_x=self.support_x[index],
            support_y=self.support_y[index],
            query_x=self.query_x[index],
            query_y=self.query_y[index],
        )

    def soft_targets(self, y: Tensor) -> Tensor:
        """Labels as float targets that mix linearly: one-hot ``[..., n_way]`` or the regression targets as they are."""
        if self.n_way is None:
            return y.to(self.support_x.dtype)
        return torch.nn.functional.one_hot(y, self.n_way).to(self.support_x.dtype)


@dataclass(frozen=True)
class MixPlan:
    """The random choices of an outer-loop strategy for one meta-batch, drawn outside ``vmap``.

    ``layer`` is the mixing layer: one int shared by the meta-batch, or a tuple with one layer per task (a learner
    then runs one vectorized computation per distinct layer, since a vmapped computation cannot branch per task).
    Every tensor in ``tensors`` has a leading task dimension and is sliced per task before :meth:`Strategy.apply`.
    """

    layer: int | tuple[int, ...]
    tensors: dict[str, Tensor] = field(default_factory=dict)

    def layer_of(self, index: int) -> int:
        """The mixing layer of task ``index``."""
        return self.layer if isinstance(self.layer, int) else self.layer[index]

    def task(self, index: int) -> MixPlan:
        return MixPlan(self.layer_of(index), {k: v[index] for k, v in self.tensors.items()})


@dataclass(frozen=True)
class OuterBatch:
    """What the outer loss of one task is computed on: hidden batch ``h`` at mixable ``layer`` (0 = inputs) and soft
    ``targets`` (``[B, n_way]`` mixed one-hot, or ``[B, D]`` regression targets)."""

    h: Tensor
    targets: Tensor
    layer: int
