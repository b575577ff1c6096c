"""Training from scratch: the LASIUM paper's (Khodadadeh et al., 2021) baseline without meta-training."""

from __future__ import annotations

import torch
from torch import Tensor

from metabench import Param, TaskBatch, parameters
from metabench.interfaces import Params, Strategy, TaskType
from metabench.plugins.learners.execution import VECTORIZE, Vectorize
from metabench.plugins.learners.gradient import GradientLearner


@parameters(
    Param("steps", int, 100, "SGD steps on the support set of each evaluation task", low=0),
    Param("lr", float, 0.01, "SGD step size", low=0.0),
    VECTORIZE,
)
class Scratch(GradientLearner):
    """Training from scratch (the LASIUM paper's baseline): no meta-training; each evaluation task trains the
    freshly initialised parameters by ``steps`` SGD steps on its support set only."""

    meta_trains = False

    def __init__(self, *, steps: int, lr: float, vectorize: Vectorize):
        super().__init__(inner_steps=steps, inner_lr=lr, eval_inner_steps=steps, first_order=True, vectorize=vectorize)

    def incompatible(self, strategy: Strategy, strategy_name: str, task_type: TaskType) -> str | None:
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
