"""MultiMix (Venkataramanan et al., "Embedding Space Interpolation Beyond Mini-Batch, Beyond Pairs and Beyond
Examples", Sec. 3.2, Eq. 6-8) in the outer loop: Dirichlet combinations of a whole task."""

from __future__ import annotations

import torch
from torch import Tensor

from metabench import ConfigError, MixPlan, OuterBatch, Param, TaskBatch, parameters
from metabench.interfaces import Encode
from metabench.plugins.strategies.mixing import (
    LAYERS_PARAM,
    PlanOnlyStrategy,
    check_layers,
    combine,
    draw_dirichlet,
    draw_layer,
    draw_permutations,
    make_plan,
    meta_batch_sizes,
)

DEFAULT_SIZE_FACTOR = 4  # n = 4 (K_s + K_q) when n is not given: "n ≫ b" at a cost a CPU meta-step can afford


@parameters(
    LAYERS_PARAM,
    Param("n", int, None, "mixed samples per task; none = 4 x (support + query size)", low=1, nullable=True),
    Param(
        "alpha_low",
        float,
        0.5,
        "lower end of U[alpha_low, alpha_high], the Dirichlet concentration's distribution (one draw per mixed sample)",
        low=1e-3,
    ),
    Param("alpha_high", float, 2.0, "upper end of the Dirichlet concentration's range", low=1e-3),
    Param(
        "m",
        int,
        None,
        "points combined per mixed sample, a random subset of the task's support and query points with Dirichlet "
        "weights over it (MultiMix Sec. 4.6, 'Number m of examples being interpolated'); none = all of them, the "
        "paper's default m = b. In a few-shot task all ~30 points give near-uniform soft targets: m = 2 or 3 keeps "
        "the targets informative",
        low=1,
        nullable=True,
    ),
    Param(
        "clean_query",
        bool,
        False,
        "also keep the clean query samples in the outer batch, beside the n mixed ones (each counts as one sample of "
        "the n + K_q averaged); false = the mixed samples replace the task, as in the paper",
    ),
)
class MultiMixStrategy(PlanOnlyStrategy):
    """MultiMix: at a layer l drawn uniformly from ``layers``, ``n`` convex combinations of *all* support and query
    embeddings of a task (or of a random subset of ``m`` of them), each with its own weights ``λ_k ~ Dir(a_k)`` and
    ``a_k ~ U[alpha_low, alpha_high]``; soft targets combined with the same weights. The outer batch has ``n``
    samples, plus the ``K_q`` clean query samples when ``clean_query`` is set."""

    def __init__(
        self,
        layers: list[int] | None,
        n: int | None,
        alpha_low: float,
        alpha_high: float,
        m: int | None,
        clean_query: bool,
    ):
        if alpha_low > alpha_high:
            raise ConfigError(
                f"strategy 'multimix' parameters alpha_low = {alpha_low} > alpha_high = {alpha_high}: the Dirichlet "
                "concentration is drawn from U[alpha_low, alpha_high], so alpha_low must be <= alpha_high"
            )
        self.layers = check_layers(layers)
        self.n = n
        self.alpha_low = alpha_low
        self.alpha_high = alpha_high
        self.m = m
        self.clean_query = clean_query

    def plan(self, rng: torch.Generator, tasks: TaskBatch, n_layers: int) -> MixPlan:
        n_tasks, n_support, n_query = meta_batch_sizes(tasks)
        size = n_support + n_query
        n_mixed = self.n if self.n is not None else DEFAULT_SIZE_FACTOR * size
        layer = draw_layer(rng, self.layers, n_layers, n_tasks, "meta-batch")
        low, high = self.alpha_low, self.alpha_high
        concentration = low + (high - low) * torch.rand(n_tasks, n_mixed, generator=rng, dtype=torch.float64)
        m = size if self.m is None else min(self.m, size)
        subset = draw_permutations(rng, n_tasks * n_mixed, size)[:, :m].view(n_tasks, n_mixed, m)
        weights = torch.zeros(n_tasks, n_mixed, size).scatter_(2, subset, draw_dirichlet(rng, concentration, m))
        if self.clean_query:  # one-hot rows: query sample j "combines" only itself
            clean = torch.eye(size)[n_support:].expand(n_tasks, n_query, size)
            weights = torch.cat([weights, clean], dim=1)
        return make_plan(layer, tasks, weights=weights)

    def apply(
        self, plan: MixPlan, encode: Encode, support_x: Tensor, support_t: Tensor, query_x: Tensor, query_t: Tensor
    ) -> OuterBatch:
        # Each set is encoded on its own, as MetaMix does, so batch statistics are those of the support and the query.
        h = torch.cat([encode(support_x, plan.layer), encode(query_x, plan.layer)])
        targets = torch.cat([support_t, query_t])
        weights = plan.tensors["weights"]
        return OuterBatch(combine(weights, h), combine(weights, targets), plan.layer)
