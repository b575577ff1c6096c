"""Reptile (Nichol et al., 2018, "On First-Order Meta-Learning Algorithms")."""

from __future__ import annotations

import torch
from torch import Tensor

from metabench import TaskBatch, parameters
from metabench.interfaces import Params, Strategy, TaskType
from metabench.plugins.learners.execution import VECTORIZE, Vectorize
from metabench.plugins.learners.gradient import GradientLearner, inner_loop_params


@parameters(*inner_loop_params(5, 0.1), VECTORIZE)
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

    def incompatible(self, strategy: Strategy, strategy_name: str, task_type: TaskType) -> str | None:
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
