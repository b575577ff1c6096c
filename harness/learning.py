"""The learner author's toolkit: the pieces the built-in learners are made of, for writing a new one.

A learner (:class:`metabench.interfaces.MetaLearner`) usually needs three things, all here:

- **the network on a parameter dict**: :class:`Network` calls the backbone with the meta-parameters or a task's fast
  weights (``network(params, h, start, stop)``); :func:`initial_backbone_params` draws the initial parameters.
- **the adapt step**: :class:`InnerLoop` takes gradient steps on a support set (first or second order);
  ``inner.adapter(loss, steps, first_order)`` is the per-task function ``adapt(params, (support_x, support_t))``.
- **the outer objective**: :class:`OuterObjective` ``.meta_loss(params, adapt, tasks, rng)`` runs plan → adapt →
  refine → apply → loss for any strategy, on the loop or the vmap path (:func:`use_vmap`, the learner's
  :data:`VECTORIZE` parameter), and returns a loss that keeps the ``meta_loss`` contract of
  :mod:`metabench.interfaces`. ``predict`` says what the outer batch becomes (:func:`rest_of_network` for a
  MAML-style learner).

``metabench run --compile`` calls a learner's optional ``compile_meta_gradient(name)``; the built-in ones answer by
passing a :class:`CompiledTasks` as the objective's ``compiled``, which runs the loop path's per-task meta-gradients
under ``torch.compile``.

:func:`adaptation_scores` is the ``evaluate`` of a learner that adapts; :func:`map_tasks` and :func:`task_slice` run a
per-task function over a meta-batch; :func:`task_diagnostics` computes MetaMix's analyses from a per-task probe.
README.md, "Writing a learner", has a complete first-order MAML in under 40 lines.

The implementation lives with the built-in learners (``metabench.plugins.learners``); this module is its public face.
"""

from __future__ import annotations

from metabench.plugins.learners.diagnostics import TaskProbe, task_diagnostics
from metabench.plugins.learners.execution import (
    VECTORIZE,
    CompiledTasks,
    Vectorize,
    map_tasks,
    task_slice,
    use_vmap,
)
from metabench.plugins.learners.inner_loop import Adapt, InnerLoop, adaptation_scores
from metabench.plugins.learners.losses import Loss, mse, soft_cross_entropy, task_loss, task_score
from metabench.plugins.learners.network import Network, detached, initial_backbone_params
from metabench.plugins.learners.outer_objective import OuterObjective, Predict, rest_of_network

__all__ = [
    "VECTORIZE",
    "Adapt",
    "CompiledTasks",
    "InnerLoop",
    "Loss",
    "Network",
    "OuterObjective",
    "Predict",
    "TaskProbe",
    "Vectorize",
    "adaptation_scores",
    "detached",
    "initial_backbone_params",
    "map_tasks",
    "mse",
    "rest_of_network",
    "soft_cross_entropy",
    "task_diagnostics",
    "task_loss",
    "task_score",
    "task_slice",
    "use_vmap",
]
