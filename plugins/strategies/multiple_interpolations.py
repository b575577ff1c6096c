"""multi-mix (Shen et al., "Mixup Augmentation with Multiple Interpolations", Sec. III-A, Eq. 6) in the outer loop:
K ordered interpolations per support-query pair."""

from __future__ import annotations

import torch

from metabench import MixPlan, Param, TaskBatch, parameters
from metabench.plugins.strategies.metamix import MetaMixStrategy
from metabench.plugins.strategies.mixing import (
    MIXUP_PARAMS,
    LayerPer,
    draw_beta,
    draw_layer,
    draw_pairing,
    make_plan,
    meta_batch_sizes,
)


@parameters(*MIXUP_PARAMS, Param("k", int, 5, "interpolations per support-query pair (the paper uses 5)", low=1))
class MultipleInterpolationsStrategy(MetaMixStrategy):
    """multi-mix: MetaMix's support-query pairs, each mixed K times with ``λ_1 < … < λ_K`` (K sorted draws of
    Beta(alpha, beta)) at the same layer. The outer batch holds all K·K_q mixes, so the usual mean loss over the batch
    is the paper's average over the K interpolations (which lowers the variance of the meta-gradient, Sec. III-B)."""

    def __init__(self, layers: list[int] | None, layer_per: LayerPer, alpha: float, beta: float, k: int):
        super().__init__(layers, layer_per, alpha, beta)
        self.k = k

    def plan(self, rng: torch.Generator, tasks: TaskBatch, n_layers: int) -> MixPlan:
        n_tasks, n_support, n_query = meta_batch_sizes(tasks)
        layer = draw_layer(rng, self.layers, n_layers, n_tasks, self.layer_per)
        pair = draw_pairing(rng, n_tasks, n_support, n_query)
        lam = draw_beta(rng, self.alpha, self.beta, (n_tasks, n_query, self.k)).sort(dim=-1).values
        return make_plan(layer, tasks, pair=pair, lam=lam)
