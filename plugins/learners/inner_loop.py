"""The one inner loop: gradient steps on a task's support set from the meta-parameters, giving its fast weights;
and the scores of a learner that adapts, before and after adapting."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from metabench import TaskBatch
from metabench.interfaces import Params
from metabench.plugins.learners.execution import map_tasks
from metabench.plugins.learners.losses import Loss, task_score
from metabench.plugins.learners.network import Network, detached

Adapt = Callable[[Params, tuple[Tensor, Tensor]], Params]
"""``adapt(params, (support_x, support_t))``: one task's fast weights (the parameters its outer loss replaces)."""


def lr_name(name: str) -> str:
    """The meta-parameter holding MetaSGD's per-element inner learning rates of parameter ``name``."""
    return f"inner_lr.{name}"


@dataclass(frozen=True)
class InnerLoop:
    """Gradient steps on the support set from the meta-parameters, for the parameters named in ``adapted``.

    ``learned_lrs``: each parameter's step size is the meta-parameter :func:`lr_name` (MetaSGD), else ``lr``.
    ``first_order``: the support gradients are treated as constants, so the meta-gradient skips second derivatives.
    Uses ``torch.func.grad``, so one task's adaptation runs as is or under ``vmap`` (and under ``torch.no_grad``).
    """

    network: Network
    adapted: tuple[str, ...]
    lr: float
    learned_lrs: bool = False

    def adapt(self, params: Params, x: Tensor, t: Tensor, loss: Loss, steps: int, first_order: bool) -> Params:
        """The fast weights (adapted parameters only) after ``steps`` steps on ``(x, t)``."""
        fast = {name: params[name] for name in self.adapted}

        def support_loss(weights: Params) -> Tensor:
            return loss(self.network({**params, **weights}, x), t)

        for _ in range(steps):
            grads = torch.func.grad(support_loss)(fast)
            fast = {
                name: weight - self.step_size(params, name) * (grads[name].detach() if first_order else grads[name])
                for name, weight in fast.items()
            }
        return fast

    def adapter(self, loss: Loss, steps: int, first_order: bool) -> Adapt:
        """:meth:`adapt` as the per-task function an :class:`OuterObjective` maps over the meta-batch."""

        def one_task(shared: Params, support: tuple[Tensor, Tensor]) -> Params:
            return self.adapt(shared, *support, loss, steps, first_order)

        return one_task

    def step_size(self, params: Params, name: str) -> Tensor | float:
        return params[lr_name(name)] if self.learned_lrs else self.lr


@torch.no_grad()
def adaptation_scores(
    network: Network, adapt: Adapt, params: Params, tasks: TaskBatch, vmap: bool
) -> dict[str, Tensor]:
    """What :meth:`MetaLearner.evaluate` returns for a learner that adapts by ``adapt``: each task's score
    (:func:`task_score`) before and after adapting, on the query set (``pre``, ``post``) and on the support set
    (``train_pre``, ``train_post``); no graph is built."""
    score = task_score(tasks)

    def one_task(shared: Params, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        support_x, support_t, query_x, query_t = batch
        adapted = {**shared, **adapt(shared, (support_x, support_t))}
        return {
            "pre": score(network(shared, query_x), query_t),
            "post": score(network(adapted, query_x), query_t),
            "train_pre": score(network(shared, support_x), support_t),
            "train_post": score(network(adapted, support_x), support_t),
        }

    batch = (tasks.support_x, tasks.soft_targets(tasks.support_y), tasks.query_x, tasks.soft_targets(tasks.query_y))
    return map_tasks(one_task, detached(params), batch, vmap)
