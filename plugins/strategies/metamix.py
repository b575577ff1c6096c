"""MetaMix (Yao et al., Sec. 3, Eq. 3-4): the outer loss on support and query samples mixed at a hidden layer."""

from __future__ import annotations

import torch
from torch import Tensor

from metabench import MixPlan, OuterBatch, TaskBatch, parameters
from metabench.interfaces import Encode
from metabench.plugins.strategies.mixing import (
    MIXUP_PARAMS,
    LayerMixStrategy,
    draw_pairing,
    make_plan,
    meta_batch_sizes,
    mix_support_query,
)


@parameters(*MIXUP_PARAMS)
class MetaMixStrategy(LayerMixStrategy):
    """MetaMix: at a layer l drawn uniformly from ``layers`` (per task, Algorithm 1 line 7, or per meta-batch),
    ``X_mix = λ f^l(X_s) + (1 − λ) f^l(X_q)`` and ``Y_mix = λ Y_s + (1 − λ) Y_q`` on soft targets, one
    ``λ_j ~ Beta(alpha, beta)`` per query sample; each query sample is mixed with a support sample drawn at random
    (one-to-one when K_s ≥ K_q, with replacement when K_s < K_q). The outer batch has the query set's size. Set
    alpha = beta = 0.5 for regression, as the paper does."""

    def plan(self, rng: torch.Generator, tasks: TaskBatch, n_layers: int) -> MixPlan:
        n_tasks, n_support, n_query = meta_batch_sizes(tasks)
        layer = self.draw_layer(rng, n_layers, n_tasks)
        pair = draw_pairing(rng, n_tasks, n_support, n_query)
        return make_plan(layer, tasks, pair=pair, lam=self.draw_lam(rng, (n_tasks, n_query)))

    def apply(
        self, plan: MixPlan, encode: Encode, support_x: Tensor, support_t: Tensor, query_x: Tensor, query_t: Tensor
    ) -> OuterBatch:
        return mix_support_query(plan, encode, support_x, support_t, query_x, query_t)
