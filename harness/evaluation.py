"""The evaluation protocol: fixed seeded evaluation tasks shared by every cell, per-task scores, confidence intervals.

The tasks of a split depend only on (dataset, protocol, split) for every sampler that draws standard tasks in the
evaluation roles: every grid cell of a benchmark is then scored on the same tasks, so two cells can be compared task
by task (a paired test).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from metabench.cache import stable_hash
from metabench.interfaces import Dataset, MetaLearner, Params, SamplerContext, SplitName, TaskSampler
from metabench.runspec import EvalProtocol
from metabench.seeds import make_generator
from metabench.tasks import TaskBatch, TaskShape

_fixed_tasks: dict[str, TaskBatch] = {}


def metric_of(task_type: str) -> dict[str, Any]:
    """The score a benchmark reports and its goal (:mod:`metabench.metrics`): accuracy for classification, MSE for
    regression."""
    if task_type == "regression":
        return {"name": "mse", "goal": "minimize"}
    return {"name": "accuracy", "goal": "maximize"}


def task_shape(protocol: EvalProtocol, task_type: str) -> TaskShape:
    n_way = protocol.n_way if task_type == "classification" else None
    return TaskShape(n_way, protocol.k_shot, protocol.k_query)


def fixed_tasks(
    dataset: Dataset,
    sampler: TaskSampler,
    sampler_key: str,
    split: SplitName,
    n_tasks: int,
    protocol: EvalProtocol,
    context: SamplerContext,
) -> TaskBatch:
    """The benchmark's fixed tasks of ``split``: the dataset's own protocol when it has one, else ``n_tasks`` tasks
    that the run's sampler, bound in the role ``split``, draws from a generator seeded by (eval seed, split).

    Samplers that change meta-training only (``nme``, LASIUM) draw standard tasks in the evaluation roles, so every
    cell of a benchmark is scored on the same tasks; records carry a hash of them, which the leaderboard checks
    before it compares two cells. Cached per process by ``sampler_key`` (the sampler's name and parameters)."""
    key = stable_hash([context.dataset_key, sampler_key, split, n_tasks, protocol.__dict__, str(context.device)])
    if key not in _fixed_tasks:
        tasks = dataset.evaluation_tasks(split)
        if tasks is None:
            eval_context = replace(context, seed=protocol.eval_seed)
            shape = task_shape(protocol, dataset.task_type)
            source = sampler.bind(dataset.split(split), shape, eval_context, role=split)
            tasks = source(n_tasks, make_generator(protocol.eval_seed, split))
        _fixed_tasks[key] = tasks.to(context.device)
    return _fixed_tasks[key]


def evaluate_tasks(learner: MetaLearner, params: Params, tasks: TaskBatch, chunk: int) -> dict[str, Tensor]:
    """The learner's per-task scores on ``tasks``, computed ``chunk`` tasks at a time, as CPU tensors ``[T]``."""
    parts = [learner.evaluate(params, tasks.select(slice(i, i + chunk))) for i in range(0, tasks.n_tasks, chunk)]
    return {name: torch.cat([p[name].detach().float().cpu() for p in parts]) for name in parts[0]}
