"""The outer objective of one meta-batch: plan, adapt, refine, apply, loss; what MAML-family learners and ProtoNets
share, and what a new learner builds on (:mod:`metabench.learning`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from metabench import MixPlan, OuterBatch, TaskBatch
from metabench.interfaces import Params, Strategy
from metabench.plugins.learners.execution import (
    CompiledTasks,
    TaskLoss,
    WithGradients,
    each_task,
    gradients_task_by_task,
    map_by_layer,
    map_tasks,
    n_tasks,
    stack_tasks,
    task_gradient,
    task_slice,
)
from metabench.plugins.learners.inner_loop import Adapt
from metabench.plugins.learners.losses import Loss
from metabench.plugins.learners.network import Network, detached

Predict = Callable[[Params, OuterBatch, Tensor, Tensor], Tensor]
"""``predict(params, outer, support_x, support_t)``: the output the outer loss compares with ``outer.targets``."""


def rest_of_network(network: Network) -> Predict:
    """The prediction of MAML-family learners: the outer batch run through ``network`` from its layer on."""

    def predict(params: Params, outer: OuterBatch, support_x: Tensor, support_t: Tensor) -> Tensor:
        return network(params, outer.h, start=outer.layer)

    return predict


@dataclass(frozen=True)
class OuterObjective:
    """The outer loss of one meta-batch under a strategy (:meth:`meta_loss`).

    ``predict`` turns the outer batch into outputs under a task's parameters (the rest of the network for
    MAML-family learners; distances to the support prototypes for ProtoNets). ``lookahead_lr`` is the step of the
    held-out lookahead that refining strategies score their plan with. ``vmap``: the execution path
    (:func:`~metabench.learning.use_vmap`). ``compiled``: the loop path's per-task meta-gradients run under
    ``torch.compile`` (its graphs kept there, so the learner passes the same one at every step), else eager.
    """

    network: Network
    strategy: Strategy
    loss: Loss
    predict: Predict
    lookahead_lr: float
    vmap: bool
    compiled: CompiledTasks | None = None

    def task_loss(self, layer: int) -> Callable[[Params, tuple], Tensor]:
        """One task's outer loss, its plan mixing at ``layer``: ``f(shared, (fast, plan_tensors, support_x,
        support_t, query_x, query_t))`` with the task's slices."""

        def one_task(shared: Params, batch: tuple) -> Tensor:
            fast, plan_tensors, support_x, support_t, query_x, query_t = batch
            params = {**shared, **fast}

            def encode(x: Tensor, stop: int) -> Tensor:
                return self.network(params, x, 0, stop)

            outer = self.strategy.apply(MixPlan(layer, plan_tensors), encode, support_x, support_t, query_x, query_t)
            return self.loss(self.predict(params, outer, support_x, support_t), outer.targets)

        return one_task

    def losses(self, params: Params, fast: Params, plan: MixPlan, data: tuple[Tensor, ...]) -> Tensor:
        """Per-task outer losses ``[T]``; ``data`` = (support_x, support_t, query_x, query_t) with task dimension."""
        return map_by_layer(self.task_loss, params, (fast, plan.tensors, *data), plan.layer, self.vmap)

    def heldout_loss(
        self, params: Params, fast_weights: Callable[[], Params], data: tuple[Tensor, ...]
    ) -> Callable[[MixPlan], Tensor]:
        """For :meth:`Strategy.refine`: the mean query loss after one SGD step (``lookahead_lr``) of the fast weights
        (``fast_weights()``, with a task dimension) on the outer batch a plan gives. Differentiable w.r.t. the plan's
        tensors only (weights are detached). Lazy: a strategy whose ``refine`` never calls it costs nothing."""
        shared = detached(params)
        fast: list[Params] = []

        def lookahead_loss(layer: int) -> Callable[[Params, tuple], Tensor]:
            outer_loss = self.task_loss(layer)

            def one_task(shared: Params, batch: tuple) -> Tensor:
                fast_task, plan_tensors, support_x, support_t, query_x, query_t = batch
                grads = torch.func.grad(
                    lambda weights: outer_loss(shared, (weights, plan_tensors, support_x, support_t, query_x, query_t))
                )(fast_task)
                ahead = {name: w - self.lookahead_lr * grads[name] for name, w in fast_task.items()}
                query = OuterBatch(query_x, query_t, 0)
                return self.loss(self.predict({**shared, **ahead}, query, support_x, support_t), query_t)

            return one_task

        def heldout(plan: MixPlan) -> Tensor:
            if not fast:
                fast.append(detached(fast_weights()))
            return map_by_layer(lookahead_loss, shared, (fast[0], plan.tensors, *data), plan.layer, self.vmap).mean()

        return heldout

    def meta_loss(self, params: Params, adapt: Adapt, tasks: TaskBatch, rng: torch.Generator) -> Tensor:
        """The mean outer loss over ``tasks``: the strategy plans, may refine its plan on the held-out loss, and
        applies it to every task adapted by ``adapt``; the contract of :meth:`MetaLearner.meta_loss` (one
        ``backward()``).

        Each task is adapted once, the first time its fast weights are needed (by the held-out loss of a refining
        strategy, or by the outer loss). Under ``vmap`` one graph spans the meta-batch; in the per-task loop each
        task's meta-gradient is taken as soon as its loss is known (:func:`gradients_task_by_task`) and the loss
        returned carries the summed gradients to its ``backward()``.
        """
        data = (tasks.support_x, tasks.soft_targets(tasks.support_y), tasks.query_x, tasks.soft_targets(tasks.query_y))
        plan = self.strategy.plan(rng, tasks, self.network.n_layers)
        adapted = AdaptedOnce(adapt, params, data[:2], self.vmap, torch.is_grad_enabled())
        plan = self.strategy.refine(plan, self.heldout_loss(params, adapted.stacked, data))
        if gradients_task_by_task(self.vmap, params, plan):
            return self.task_by_task(params, adapt, plan, data, adapted.per_task)
        return self.losses(params, adapted.stacked(), plan, data).mean()

    def task_by_task(
        self, params: Params, adapt: Adapt, plan: MixPlan, data: tuple[Tensor, ...], fast: list[Params] | None
    ) -> Tensor:
        """The mean outer loss, each task adapted (unless ``fast`` has its fast weights already), scored and
        differentiated in turn (see :meth:`meta_loss`); compiled when :attr:`compiled` is set and the adaptation is
        part of the task's computation (a refining strategy adapted every task already: eager)."""
        names = [name for name, value in params.items() if value.requires_grad]
        count = n_tasks(data)
        losses, total = [], [torch.zeros_like(params[name]) for name in names]
        for i in range(count):
            support_x, support_t, query_x, query_t, plan_tensors = task_slice((*data, plan.tensors), i)
            layer = plan.layer_of(i)
            if fast is not None:
                batch = (fast[i], plan_tensors, support_x, support_t, query_x, query_t)
                loss, grads = task_gradient(self.task_loss(layer), params, names, batch, count)
            else:
                batch = (plan_tensors, support_x, support_t, query_x, query_t)
                make = functools.partial(self.adapted_loss, adapt, layer)
                if self.compiled is None:
                    loss, grads = task_gradient(make(), params, names, batch, count)
                else:
                    # One graph per mixing layer; the strategy's kind and the loss are what else it can differ by.
                    key = (layer, type(self.strategy), self.loss)
                    loss, grads = self.compiled.gradient(key, make, params, names, batch, count)
            for accumulated, grad in zip(total, grads, strict=True):
                if grad is not None:
                    accumulated.add_(grad)
            losses.append(loss.detach())
        return WithGradients.apply(torch.stack(losses).mean(), tuple(total), *(params[name] for name in names))

    def adapted_loss(self, adapt: Adapt, layer: int) -> TaskLoss:
        """One task's outer loss from the meta-parameters, its adaptation by ``adapt`` included: ``f(params,
        (plan_tensors, support_x, support_t, query_x, query_t))``, the unit the loop path compiles."""
        outer_loss = self.task_loss(layer)

        def one_task(params: Params, batch: tuple) -> Tensor:
            plan_tensors, support_x, support_t, query_x, query_t = batch
            fast = adapt(params, (support_x, support_t))
            return outer_loss(params, (fast, plan_tensors, support_x, support_t, query_x, query_t))

        return one_task


class AdaptedOnce:
    """Every task's fast weights, computed the first time :meth:`stacked` asks for them (with the grad mode of the
    caller of :meth:`OuterObjective.meta_loss`, whatever mode a strategy's ``refine`` asks in) and kept: the held-out
    loss and the outer loss share one adaptation. On the loop path the per-task results are kept too, each with
    its own graph (:attr:`per_task`), so that the task-by-task gradients need not stack and re-slice them; a
    refining strategy on the loop path thus holds every task's inner-loop graph until that task's turn."""

    def __init__(self, adapt: Adapt, params: Params, support: tuple[Tensor, Tensor], vmap: bool, grad: bool):
        self.adapt, self.params, self.support, self.vmap, self.grad = adapt, params, support, vmap, grad
        self.per_task: list[Params] | None = None
        self._stacked: Params | None = None

    def stacked(self) -> Params:
        """The fast weights of every task, with a task dimension."""
        if self._stacked is None:
            with torch.set_grad_enabled(self.grad):
                if self.vmap:
                    self._stacked = map_tasks(self.adapt, self.params, self.support, vmap=True)
                else:
                    self.per_task = each_task(self.adapt, self.params, self.support)
                    self._stacked = stack_tasks(self.per_task)
        return self._stacked
