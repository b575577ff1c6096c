"""How a meta-batch's per-task computations run: one ``torch.func.vmap`` over the tasks, or a Python loop over them.

Both paths run the same per-task function, so they give the same numbers (to rounding). :func:`use_vmap` is the one
place that chooses between them; :func:`gradients_task_by_task` says when the loop also takes each task's
meta-gradient as soon as its loss is known, and :class:`CompiledTasks` runs that per-task meta-gradient under
``torch.compile`` when a run asks for it (``metabench run --compile``).
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree
from tqdm.auto import tqdm

from metabench import MixPlan, Param
from metabench.interfaces import Params
from metabench.plugins.learners.network import Network

Vectorize = Literal["auto", "vmap", "loop"]
VECTORIZE = Param(
    "vectorize",
    str,
    "auto",
    "one torch.func.vmap over the meta-batch, or a per-task loop (same numbers); auto: loop for conv backbones on "
    "CPU (measured faster there), else vmap",
    choices=("auto", "vmap", "loop"),
)


def use_vmap(vectorize: Vectorize, device: torch.device, network: Network) -> bool:
    """``auto``: vmap, except for convolutional backbones on CPU, where per-task weights turn each convolution into a
    grouped one that is slower than a loop over tasks (benchmarks/bench_learners.py); fully connected layers batch
    into fast batched matrix products (6x faster than the loop for the sinusoid MLP on CPU)."""
    if vectorize != "auto":
        return vectorize == "vmap"
    convolutional = any(isinstance(module, nn.Conv2d) for module in network.backbone.modules())
    return device.type != "cpu" or not convolutional


def gradients_task_by_task(vmap: bool, params: Params, plan: MixPlan) -> bool:
    """Whether the loop path takes each task's meta-gradient as soon as its loss is known, which frees that task's
    graph: the loop then holds one task's graph, not the meta-batch's (30x less memory at meta-batch 32, and faster:
    benchmarks/README.md). Only when a gradient is wanted at all, and not when the plan's tensors want their own
    gradient: such a plan joins every task's graph, kept until the one backward."""
    differentiable = torch.is_grad_enabled() and any(value.requires_grad for value in params.values())
    plan_differentiable = any(tensor.requires_grad for tensor in pytree.tree_leaves(plan.tensors))
    return not vmap and differentiable and not plan_differentiable


def n_tasks(batched: Any) -> int:
    return pytree.tree_leaves(batched)[0].shape[0]


def task_slice(batched: Any, index: int | Tensor) -> Any:
    """Task ``index`` of ``batched``, a pytree of tensors with a leading task dimension (data, fast weights, a
    plan's tensors); a tensor of task indices gives those tasks, the task dimension kept."""
    if isinstance(index, Tensor):
        return pytree.tree_map(lambda t: t[index.to(t.device)], batched)
    return pytree.tree_map(lambda t: t[index], batched)


def each_task(fn: Callable[[Params, Any], Any], shared: Params, batched: Any) -> list[Any]:
    """``fn(shared, task_slice(batched, i))`` for every task ``i``, in a Python loop."""
    return [fn(shared, task_slice(batched, i)) for i in range(n_tasks(batched))]


def stack_tasks(outputs: list[Any]) -> Any:
    """Per-task pytrees of tensors stacked along a new leading task dimension."""
    flat_outputs = [pytree.tree_flatten(output)[0] for output in outputs]
    stacked = [torch.stack(column) for column in zip(*flat_outputs, strict=True)]
    return pytree.tree_unflatten(stacked, pytree.tree_flatten(outputs[0])[1])


def map_tasks(fn: Callable[[Params, Any], Any], shared: Params, batched: Any, vmap: bool) -> Any:
    """``fn(shared, one task's slice of batched)`` for every task, outputs stacked along a new task dimension.

    ``batched`` is a pytree of tensors with a leading task dimension. ``vmap`` runs one vectorized computation;
    otherwise a Python loop over tasks (the same function, so both paths give the same numbers).
    """
    if vmap:
        return torch.func.vmap(fn, in_dims=(None, 0))(shared, batched)
    return stack_tasks(each_task(fn, shared, batched))


def map_by_layer(
    fn_of_layer: Callable[[int], Callable[[Params, Any], Tensor]],
    shared: Params,
    batched: Any,
    layer: int | tuple[int, ...],
    vmap: bool,
) -> Tensor:
    """:func:`map_tasks` of ``fn_of_layer(layer)`` when the layer is shared; with one layer per task, one call per
    distinct layer on its tasks, the outputs ``[T]`` put back in task order."""
    if isinstance(layer, int):
        return map_tasks(fn_of_layer(layer), shared, batched, vmap)
    layers = torch.tensor(layer)
    groups = [(layers == value).nonzero().squeeze(1) for value in sorted(set(layer))]
    outputs = []
    for value, tasks in zip(sorted(set(layer)), groups, strict=True):
        outputs.append(map_tasks(fn_of_layer(value), shared, task_slice(batched, tasks), vmap))
    order = torch.cat(groups).argsort().to(outputs[0].device)
    return torch.cat(outputs)[order]


class WithGradients(torch.autograd.Function):
    """``value``, whose gradients w.r.t. ``inputs`` are known already (``gradients``, in order): its backward
    scales them and builds no graph, so the result can be differentiated once, not twice."""

    @staticmethod
    def forward(ctx: Any, value: Tensor, gradients: tuple[Tensor, ...], *inputs: Tensor) -> Tensor:
        ctx.gradients = gradients
        return value.clone()

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        return None, None, *(grad_output * gradient for gradient in ctx.gradients)


INDUCTOR_OPTIONS = {"force_layout_optimization": True}
"""Inductor keeps every tensor of a graph with convolutions channels-last. Without it, it gives the convolutions'
backward the channels-first layout of the traced graph (a one-channel input image has both layouts at once) and
transposes 15 MB of gradient a task at paper scale, and lays out pooling and batch norm in between to match: the
compiled first-order MAML step at paper scale ran at 1.31x the reference's speed without it, 1.42x with it
(benchmarks/README.md)."""

TaskLoss = Callable[[Params, tuple], Tensor]
"""``loss(params, batch)``: one task's outer loss from the meta-parameters, its adaptation included."""


class CompiledTasks:
    """The per-task meta-gradient of the loop path, its loss compiled by ``torch.compile`` (forward and backward),
    one graph per ``key``; eager for good, after one warning naming the learner, if compiling fails.

    ``fullgraph``: a graph break would leave eager islands between compiled pieces (the compiled step was 0.80-0.86x
    eager with the batch-norm break, issue 25), so a break is a failure, not a slow success. Only the loop path is
    compiled: the batch-norm form is fixed while tracing (``metabench.plugins.backbones.layers.under_vmap``).
    """

    def __init__(self, learner: str):
        self.learner = learner
        self.seconds: dict[Hashable, float] = {}  # each graph's first call, compilation included
        self._graphs: dict[Hashable, TaskLoss] = {}
        self._failed = False

    def gradient(
        self,
        key: Hashable,
        make: Callable[[], TaskLoss],
        params: Params,
        names: Sequence[str],
        batch: tuple,
        scale: int,
    ) -> tuple[Tensor, tuple[Tensor | None, ...]]:
        """One task's loss and the gradient of ``loss / scale`` w.r.t. ``params[name]`` for ``names``; ``make``
        builds the loss the first time ``key`` is seen (the graph is then reused: ``key`` must name everything that
        ``make``'s function depends on besides its arguments)."""
        if self._failed:
            return task_gradient(make(), params, names, batch, scale)
        first = key not in self._graphs
        if first:
            self._graphs[key] = torch.compile(make(), fullgraph=True, dynamic=False, options=INDUCTOR_OPTIONS)
        started = time.perf_counter()
        try:
            result = task_gradient(self._graphs[key], params, names, batch, scale)
        except Exception as error:  # noqa: BLE001 - any failure of Dynamo or Inductor: the eager path is the same math
            self._failed = True
            cause = getattr(error, "inner_exception", None) or error  # Dynamo wraps what the backend raised
            reason = f"{type(cause).__name__}: {cause}".strip().splitlines()[0]
            warnings.warn(f"learner '{self.learner}': torch.compile failed, running eager: {reason}", stacklevel=2)
            return task_gradient(make(), params, names, batch, scale)
        if first:
            self.seconds[key] = time.perf_counter() - started
            tqdm.write(
                f"learner '{self.learner}': per-task meta-gradient compiled in {self.seconds[key]:.1f} s (first call)",
                file=sys.stderr,
            )
        return result


def task_gradient(
    loss_of: TaskLoss, params: Params, names: Sequence[str], batch: tuple, scale: int
) -> tuple[Tensor, tuple[Tensor | None, ...]]:
    """``loss_of(params, batch)`` and the gradient of ``loss / scale`` w.r.t. ``params[name]`` for ``names``."""
    loss = loss_of(params, batch)
    return loss, torch.autograd.grad(loss / scale, [params[name] for name in names], allow_unused=True)
