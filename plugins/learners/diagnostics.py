"""MetaMix's meta-overfitting analyses of a learner on a few tasks: gradient norms and top singular values."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from metabench import TaskBatch
from metabench.interfaces import Params

TaskProbe = Callable[[Params, int], tuple[Tensor, Tensor, Tensor | None]]
"""``probe(init, i)``: task ``i``'s support loss, query loss (both differentiable w.r.t. ``init``) and support
representations ``[S, ...]`` before the head (``None`` when they have no meaning, e.g. regression)."""


def task_diagnostics(params: Params, names: Sequence[str], tasks: TaskBatch, probe: TaskProbe) -> dict[str, float]:
    """MetaMix's analyses averaged over ``tasks``: the norm of the gradient of each task's support and query loss
    w.r.t. the network weights ``names`` of the initialisation (Fig. 3), and the top singular value per class of its
    support representations (Table 1/8). ``probe`` says how a learner computes them for one task."""
    init = {name: value.detach().requires_grad_() for name, value in params.items()}
    weights = [init[name] for name in sorted(names)]
    support_t = tasks.soft_targets(tasks.support_y)
    norms_support, norms_query, singular = [], [], []
    with torch.enable_grad():
        for i in range(tasks.n_tasks):
            support_loss, query_loss, representations = probe(init, i)
            norms_support.append(gradient_norm(support_loss, weights))
            norms_query.append(gradient_norm(query_loss, weights))
            if representations is not None:
                singular.append(float(top_singular_value(representations.detach(), support_t[i])))
    metrics = {
        "grad_norm_support": sum(norms_support) / len(norms_support),
        "grad_norm_query": sum(norms_query) / len(norms_query),
    }
    if singular:
        metrics["top_singular_value"] = sum(singular) / len(singular)
    return metrics


def top_singular_value(representations: Tensor, targets: Tensor) -> Tensor:
    """Mean over classes of the largest singular value of one task's representations ``[S, D]`` of each class
    (``targets`` one-hot ``[S, n_way]``): other classes' rows are zeroed, which leaves the singular values alone."""
    per_class = targets.T[:, :, None] * representations.flatten(1)[None]
    return torch.linalg.svdvals(per_class).amax(-1).mean()


def gradient_norm(loss: Tensor, params: list[Tensor]) -> float:
    """Norm of the gradient of ``loss`` w.r.t. ``params``; keeps the graph, which later losses may share."""
    grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return float(torch.sqrt(sum(g.square().sum() for g in grads if g is not None)))
