"""Mixup(Ds,Ds) and Mixup(Dq,Dq) (MetaMix Table 16): manifold mixup within one set, support or query."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from metabench import MixPlan, OuterBatch, TaskBatch, parameters
from metabench.interfaces import Encode
from metabench.plugins.strategies.mixing import (
    MIXUP_PARAMS,
    LayerMixStrategy,
    LayerPer,
    draw_permutations,
    make_plan,
    meta_batch_sizes,
    mix,
)


class SelfMixupStrategy(LayerMixStrategy):
    """Manifold mixup of one set with a permutation of itself: Mixup(Ds,Ds) or Mixup(Dq,Dq), never across sets.

    At a layer l drawn from ``layers``, sample j becomes ``λ_j h_j + (1 − λ_j) h_perm(j)`` with ``λ_j ~ Beta(alpha,
    beta)``; targets likewise.
    """

    def __init__(
        self,
        source: Literal["support", "query"],
        layers: list[int] | None,
        layer_per: LayerPer,
        alpha: float,
        beta: float,
    ):
        super().__init__(layers, layer_per, alpha, beta)
        self.source = source

    def plan(self, rng: torch.Generator, tasks: TaskBatch, n_layers: int) -> MixPlan:
        n_tasks, n_support, n_query = meta_batch_sizes(tasks)
        size = n_support if self.source == "support" else n_query
        layer = self.draw_layer(rng, n_layers, n_tasks)
        perm = draw_permutations(rng, n_tasks, size)
        return make_plan(layer, tasks, perm=perm, lam=self.draw_lam(rng, (n_tasks, size)))

    def apply(
        self, plan: MixPlan, encode: Encode, support_x: Tensor, support_t: Tensor, query_x: Tensor, query_t: Tensor
    ) -> OuterBatch:
        x, t = (support_x, support_t) if self.source == "support" else (query_x, query_t)
        perm, lam = plan.tensors["perm"], plan.tensors["lam"]
        h = encode(x, plan.layer)
        return OuterBatch(mix(h, h[perm], lam), mix(t, t[perm], lam), plan.layer)


@parameters(*MIXUP_PARAMS)
def mixup_support(layers: list[int] | None, layer_per: LayerPer, alpha: float, beta: float) -> SelfMixupStrategy:
    """Mixup(Ds,Ds): at a layer l drawn uniformly from ``layers``, each support sample is mixed with a sample of a
    random permutation of the support set, ``λ_j ~ Beta(alpha, beta)`` per sample; soft targets mixed the same way."""
    return SelfMixupStrategy("support", layers, layer_per, alpha, beta)


@parameters(*MIXUP_PARAMS)
def mixup_query(layers: list[int] | None, layer_per: LayerPer, alpha: float, beta: float) -> SelfMixupStrategy:
    """Mixup(Dq,Dq): at a layer l drawn uniformly from ``layers``, each query sample is mixed with a sample of a
    random permutation of the query set, ``λ_j ~ Beta(alpha, beta)`` per sample; support and query never mix."""
    return SelfMixupStrategy("query", layers, layer_per, alpha, beta)
