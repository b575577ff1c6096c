"""MetaMixUp (Mai et al., Sec. III-B, Eq. 4-10) in the outer loop: MetaMix whose per-pair λ takes a gradient step on
the held-out loss after a one-step lookahead update."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor

from metabench import MixPlan, Param, parameters
from metabench.plugins.strategies.metamix import MetaMixStrategy
from metabench.plugins.strategies.mixing import MIXUP_PARAMS, LayerPer


@parameters(
    *MIXUP_PARAMS,
    Param(
        "lambda_lr",
        float,
        1.0,
        "step size of the gradient step on λ, then clipped to [0, 1] (the paper's 5.0 steps a pre-sigmoid "
        "value, at most 1/4 as steep: about 1.25 on λ itself)",
        low=0.0,
    ),
)
class MetaMixUpStrategy(MetaMixStrategy):
    """MetaMixUp: MetaMix's pairs and layer with ``λ_i ~ Beta(alpha, beta)`` as the starting point, then one step
    ``λ ← clip(λ − lambda_lr ∇_λ L_heldout, 0, 1)`` where ``L_heldout`` is the held-out (query) loss after a one-step
    lookahead update of the fast weights on the mixed batch (the learner builds it, averaged over the meta-batch; each
    task's λ steps on its own task's held-out loss). The paper maps λ back with a sigmoid; metabench clips, so that λ
    keeps its meaning as a mixing weight. The refined λ is a constant for the outer loss."""

    def __init__(self, layers: list[int] | None, layer_per: LayerPer, alpha: float, beta: float, lambda_lr: float):
        super().__init__(layers, layer_per, alpha, beta)
        self.lambda_lr = lambda_lr

    def refine(self, plan: MixPlan, heldout_loss: Callable[[MixPlan], Tensor]) -> MixPlan:
        lam = plan.tensors["lam"].detach().requires_grad_(True)
        loss = heldout_loss(replace(plan, tensors={**plan.tensors, "lam": lam}))
        # The held-out loss may share graph with the inner loop the outer loss still needs: keep it.
        (gradient,) = torch.autograd.grad(loss, lam, retain_graph=True)
        # heldout_loss averages over the meta-batch, which would shrink each task's step by 1/T: scale it back so that
        # every task's λ steps on its own held-out loss, whatever the meta-batch size.
        n_tasks = lam.shape[0]
        refined = (lam.detach() - self.lambda_lr * n_tasks * gradient).clamp(0.0, 1.0)
        return replace(plan, tensors={**plan.tensors, "lam": refined})
