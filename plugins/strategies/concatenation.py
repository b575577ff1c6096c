"""Dcob = Ds ⊕ Dq (MetaMix Table 16): the outer loss on the support and query sets together."""

from __future__ import annotations

import torch
from torch import Tensor

from metabench import MixPlan, OuterBatch, TaskBatch
from metabench.interfaces import Encode
from metabench.plugins.strategies.mixing import PlanOnlyStrategy


class ConcatenationStrategy(PlanOnlyStrategy):
    """Dcob = Ds ⊕ Dq: the outer loss on the support set followed by the query set, at the inputs (MetaMix
    Table 16)."""

    def plan(self, rng: torch.Generator, tasks: TaskBatch, n_layers: int) -> MixPlan:
        return MixPlan(0)

    def apply(
        self, plan: MixPlan, encode: Encode, support_x: Tensor, support_t: Tensor, query_x: Tensor, query_t: Tensor
    ) -> OuterBatch:
        return OuterBatch(torch.cat([support_x, query_x]), torch.cat([support_t, query_t]), 0)
