"""The MAML family's shared learner: MAML, FOMAML, ANIL, MetaSGD and T-Net are this class with fixed options (one file
each beside this one), and Reptile and the from-scratch baseline build on it too."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from metabench import Param, TaskBatch
from metabench.interfaces import Params, Strategy, TaskType
from metabench.plugins.learners.diagnostics import task_diagnostics
from metabench.plugins.learners.execution import VECTORIZE, CompiledTasks, Vectorize, map_tasks, use_vmap
from metabench.plugins.learners.inner_loop import Adapt, InnerLoop, adaptation_scores, lr_name
from metabench.plugins.learners.losses import task_loss
from metabench.plugins.learners.network import Network, initial_backbone_params
from metabench.plugins.learners.outer_objective import OuterObjective, rest_of_network
from metabench.plugins.learners.transform import TransformAt, TransformedNetwork, transform_channels, transform_name


def inner_loop_params(steps: int, lr: float) -> tuple[Param, ...]:
    """The inner loop's parameters, with the defaults of the learner that declares them."""
    return (
        Param("inner_steps", int, steps, "gradient steps on the support set during meta-training", low=1),
        Param("inner_lr", float, lr, "inner-loop step size", low=0.0),
        Param(
            "eval_inner_steps", int, None, "steps at evaluation (first-order; none = inner_steps)", low=0, nullable=True
        ),
    )


FIRST_ORDER = Param("first_order", bool, False, "drop second derivatives of the inner loop from the meta-gradient")
MAML_PARAMS = (*inner_loop_params(1, 0.4), FIRST_ORDER, VECTORIZE)
"""MAML's parameters, shared by the variants that differ from it only in what the inner loop adapts or learns;
inner lr 0.4 and one step: MAML's (and MetaMix App. C's) Omniglot setting."""


class GradientLearner:
    """Meta-learns an initialisation adapted by gradient steps on each support set (MAML and its variants).

    Options: ``head_only`` adapts only the backbone's head (ANIL); ``learned_lrs`` meta-learns one inner step size
    per parameter element (MetaSGD); ``transform_at`` meta-learns identity-initialised linear maps of the channels
    there (:class:`TransformedNetwork`), not adapted in the inner loop (T-Net). Evaluation adapts first-order for
    ``eval_inner_steps`` steps (default: ``inner_steps``).
    """

    meta_trains = True

    def __init__(
        self,
        *,
        inner_steps: int,
        inner_lr: float,
        eval_inner_steps: int | None,
        first_order: bool,
        vectorize: Vectorize,
        head_only: bool = False,
        learned_lrs: bool = False,
        transform_at: TransformAt | None = None,
    ):
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.eval_inner_steps = inner_steps if eval_inner_steps is None else eval_inner_steps
        self.first_order = first_order
        self.vectorize = vectorize
        self.head_only = head_only
        self.learned_lrs = learned_lrs
        self.transform_at = transform_at
        self._inner: InnerLoop | None = None
        self._compiled: CompiledTasks | None = None

    # ------------------------------------------------------------------------------------------------------ binding
    def init_params(self, backbone: nn.Module, generator: torch.Generator) -> Params:
        params = initial_backbone_params(backbone, generator)
        adapted = tuple(name for name in params if not self.head_only or name.startswith(backbone.head_prefix))
        if self.learned_lrs:
            params.update({lr_name(name): torch.full_like(params[name], self.inner_lr) for name in adapted})
        if self.transform_at is not None:
            for layer, channels in enumerate(transform_channels(backbone, self.transform_at), start=1):
                reference = params[adapted[0]]
                params[transform_name(layer)] = torch.eye(channels, device=reference.device, dtype=reference.dtype)
        network = Network(backbone) if self.transform_at is None else TransformedNetwork(backbone, self.transform_at)
        self._inner = InnerLoop(network, adapted, self.inner_lr, self.learned_lrs)
        return {name: value.detach().requires_grad_() for name, value in params.items()}

    @property
    def inner(self) -> InnerLoop:
        if self._inner is None:
            raise RuntimeError(f"{type(self).__name__}: call init_params(backbone, generator) first")
        return self._inner

    @property
    def network(self) -> Network:
        return self.inner.network

    def incompatible(self, strategy: Strategy, strategy_name: str, task_type: TaskType) -> str | None:
        return None

    def compile_meta_gradient(self, name: str) -> None:
        """From now on the loop path's per-task meta-gradients run under ``torch.compile`` (``metabench run
        --compile``); ``name``, the learner's registered name, is what a failure to compile warns about."""
        self._compiled = CompiledTasks(name)

    # --------------------------------------------------------------------------------------------------- training
    def adapter(self, tasks: TaskBatch, steps: int, first_order: bool) -> Adapt:
        """One task's fast weights (adapted parameters only) after ``steps`` inner steps."""
        return self.inner.adapter(task_loss(tasks), steps, first_order)

    def adapt_all(self, params: Params, tasks: TaskBatch, steps: int, first_order: bool) -> Params:
        """Fast weights of every task (adapted parameters only), with a task dimension."""
        support = (tasks.support_x, tasks.soft_targets(tasks.support_y))
        vmap = use_vmap(self.vectorize, tasks.device, self.network)
        return map_tasks(self.adapter(tasks, steps, first_order), params, support, vmap)

    def query_losses(self, params: Params, fast: Params, tasks: TaskBatch) -> Tensor:
        """Per-task loss ``[T]`` of the fast weights on the query set."""
        loss = task_loss(tasks)

        def one_task(shared: Params, batch: tuple) -> Tensor:
            fast_task, query_x, query_t = batch
            return loss(self.network({**shared, **fast_task}, query_x), query_t)

        batch = (fast, tasks.query_x, tasks.soft_targets(tasks.query_y))
        return map_tasks(one_task, params, batch, use_vmap(self.vectorize, tasks.device, self.network))

    def objective(self, strategy: Strategy, tasks: TaskBatch) -> OuterObjective:
        vmap = use_vmap(self.vectorize, tasks.device, self.network)
        predict = rest_of_network(self.network)
        return OuterObjective(self.network, strategy, task_loss(tasks), predict, self.inner_lr, vmap, self._compiled)

    def meta_loss(
        self, params: Params, tasks: TaskBatch, strategy: Strategy, rng: torch.Generator
    ) -> tuple[Tensor, dict[str, float]]:
        adapt = self.adapter(tasks, self.inner_steps, self.first_order)
        loss = self.objective(strategy, tasks).meta_loss(params, adapt, tasks, rng)
        return loss, {"loss": float(loss.detach())}

    # ------------------------------------------------------------------------------------------------- evaluation
    def evaluate(self, params: Params, tasks: TaskBatch) -> dict[str, Tensor]:
        """Scores of each task before and after ``eval_inner_steps`` first-order steps; no outer graph is built."""
        adapt = self.adapter(tasks, self.eval_inner_steps, first_order=True)
        return adaptation_scores(
            self.network, adapt, params, tasks, use_vmap(self.vectorize, tasks.device, self.network)
        )

    def diagnostics(self, params: Params, tasks: TaskBatch) -> dict[str, float]:
        """MetaMix's analyses, averaged over tasks: gradient norms w.r.t. the initialisation of the post-adaptation
        loss on the support and on the query set (Fig. 3), and the top singular value per class of the adapted
        support representations before the head (Table 1/8, classification only)."""
        loss = task_loss(tasks)
        support_t, query_t = tasks.soft_targets(tasks.support_y), tasks.soft_targets(tasks.query_y)

        def probe(init: Params, i: int) -> tuple[Tensor, Tensor, Tensor | None]:
            fast = self.inner.adapt(init, tasks.support_x[i], support_t[i], loss, self.inner_steps, self.first_order)
            adapted = {**init, **fast}
            support_loss = loss(self.network(adapted, tasks.support_x[i]), support_t[i])
            query_loss = loss(self.network(adapted, tasks.query_x[i]), query_t[i])
            layer = self.network.representation_layer
            representations = self.network(adapted, tasks.support_x[i], 0, layer) if tasks.is_classification else None
            return support_loss, query_loss, representations

        return task_diagnostics(params, self.network.names, tasks, probe)
