"""Dq: the outer loss on the query set, as MAML and the other published algorithms compute it (MetaMix Eq. 2)."""

from __future__ import annotations

import torch
from torch import Tensor

from metabench import MixPlan, OuterBatch, TaskBatch
from metabench.interfaces import Encode
from metabench.plugins.strategies.mixing import PlanOnlyStrategy


class QueryStrategy(PlanOnlyStrategy):
    """Dq: the outer loss is computed on the query set, at the inputs (the plain algorithm; MetaMix Eq. 2)."""

    plain = True

    def plan(self, rng: torch.Generator, tasks: TaskBatch, n_layers: int) -> MixPlan:
        return MixPlan(0)

    def apply(
        self, plan: MixPlan, encode: Encode, support_x: Tensor, support_t: Tensor, query_x: Tensor, query_t: Tensor
    ) -> OuterBatch:
        return OuterBatch(query_x, query_t, 0)
