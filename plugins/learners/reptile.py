"""Reptile and the train-from-scratch baseline: learners on the shared inner loop without an outer query loss."""

from __future__ import annotations

import torch
from torch import Tensor

from metabench.interfaces import Params, Strategy
from metabench.plugins.learners.functional import Vectorize
from metabench.plugins.learners.maml import GradientLearner
from metabench.tasks import TaskBatch


class Reptile(GradientLearner):
    """Reptile (Nichol et al., 2018): first-order steps on each support set; the meta-gradient is θ − mean φ_i.

    ``meta_loss`` is ½‖θ − mean_i φ_i‖² with the adapted weights held constant, so its gradient is Reptile's update
    direction and the runner's optimiser applies it like any other meta-gradient.
    """

    def __init__(self, *, inner_steps: int, inner_lr: float, eval_inner_steps: int | None, vectorize: Vectorize):
        super().__init__(
            inner_steps=inner_steps,
            inner_lr=inner_lr,
            eval_inner_steps=eval_inner_steps,
            first_order=True,
            vectorize=vectorize,
        )

    def incompatible(self, strategy: Strategy, strategy_name: str) -> str | None:
        if strategy.plain:
            return None
        return (
            f"Reptile has no outer query loss: its meta-update moves the initialisation toward the weights adapted on "
            f"the support set, so there is nothing for strategy '{strategy_name}' to change"
        )

    def meta_loss(
        self, params: Params, tasks: TaskBatch, strategy: Strategy, rng: torch.Generator
    ) -> tuple[Tensor, dict[str, float]]:
        fast = self.adapt_all(params, tasks, self.inner_steps, first_order=True)
        loss = sum(0.5 * (params[name] - weights.detach().mean(0)).square().sum() for name, weights in fast.items())
        with torch.no_grad():
            query_loss = self.query_losses(params, fast, tasks).mean()
        return loss, {"loss": float(loss.detach()), "query_loss": float(query_loss)}


class Scratch(GradientLearner):
    """Training from scratch (the LASIUM paper's baseline): no meta-training; each evaluation task trains the
    freshly initialised parameters by ``steps`` SGD steps on its support set only."""

    meta_trains = False

    def __init__(self, *, steps: int, lr: float, vectorize: Vectorize):
        super().__init__(inner_steps=steps, inner_lr=lr, eval_inner_steps=steps, first_order=True, vectorize=vectorize)

    def incompatible(self, strategy: Strategy, strategy_name: str) -> str | None:
        if strategy.plain:
            return None
        return (
            f"training from scratch has no meta-training, hence no outer loss for strategy '{strategy_name}' to change"
        )

    def meta_loss(
        self, params: Params, tasks: TaskBatch, strategy: Strategy, rng: torch.Generator
    ) -> tuple[Tensor, dict[str, float]]:
        """The query loss after training from scratch, with a zero meta-gradient: the runner is expected to skip
        meta-training (``meta_trains`` is False), and a step it takes anyway leaves the parameters unchanged."""
        fast = self.adapt_all(params, tasks, self.inner_steps, first_order=True)
        query_loss = self.query_losses(params, fast, tasks).mean().detach()
        loss = query_loss + 0 * sum(p.sum() for p in params.values())
        return loss, {"loss": float(query_loss)}
