"""The functional core every learner runs on: a parameter-dict network, the one inner loop, and per-task mapping.

Parameters are plain ``dict[str, Tensor]``; the backbone is called through ``torch.func.functional_call``, so the
same code runs with meta-parameters or with a task's fast weights, one task at a time or under ``torch.func.vmap``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils import _pytree as pytree

from metabench import ConfigError, MixPlan, OuterBatch, Param, TaskBatch
from metabench.interfaces import Params, Strategy

Vectorize = Literal["auto", "vmap", "loop"]
VECTORIZE = Param(
    "vectorize",
    str,
    "auto",
    "one torch.func.vmap over the meta-batch, or a per-task loop (same numbers); auto: loop for conv backbones on "
    "CPU (measured faster there), else vmap",
    choices=("auto", "vmap", "loop"),
)
Loss = Callable[[Tensor, Tensor], Tensor]
Predict = Callable[[Params, OuterBatch, Tensor, Tensor], Tensor]
"""``predict(params, outer, support_x, support_t)``: the output the outer loss compares with ``outer.targets``."""
Adapt = Callable[[Params, tuple[Tensor, Tensor]], Params]
"""``adapt(params, (support_x, support_t))``: one task's fast weights (the parameters its outer loss replaces)."""


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy against soft (e.g. mixed one-hot) targets, averaged over the batch."""
    return -(targets * logits.log_softmax(-1)).sum(-1).mean()


def mse(prediction: Tensor, targets: Tensor) -> Tensor:
    return (prediction - targets).square().mean()


def task_loss(tasks: TaskBatch) -> Loss:
    return soft_cross_entropy if tasks.is_classification else mse


def task_score(tasks: TaskBatch) -> Loss:
    """Accuracy (classification; targets one-hot) or MSE (regression) of one task's predictions."""
    if tasks.is_classification:
        return lambda logits, targets: (logits.argmax(-1) == targets.argmax(-1)).to(logits.dtype).mean()
    return mse


def lr_name(name: str) -> str:
    """The meta-parameter holding MetaSGD's per-element inner learning rates of parameter ``name``."""
    return f"inner_lr.{name}"


def transform_name(layer: int) -> str:
    """The meta-parameter holding T-Net's ``layer``-th transformation (1-based; where it acts: :class:`Network`)."""
    return f"transform.{layer}"


def initial_backbone_params(backbone: nn.Module, generator: torch.Generator) -> Params:
    """Fresh parameters from ``generator`` when the backbone can draw them, else copies of its own."""
    init = getattr(backbone, "init_parameters", None)
    if init is not None:
        return dict(init(generator))
    return {name: p.detach().clone() for name, p in backbone.named_parameters()}


TransformAt = Literal["conv", "block"]
TRANSFORM_AT = Param(
    "transform_at",
    str,
    "conv",
    "where T-Net's meta-learned channel transforms act: 'conv', a linear map of the channels right after each "
    "block's convolution (before normalisation) and after the output layer, as in Lee & Choi's released T-Net code; "
    "'block', after each whole block (conv, norm, activation, pool) and none after the head",
    choices=("conv", "block"),
)


def hidden_channels(backbone: nn.Module) -> list[int]:
    """Channels (dimension 1) of the hidden batch at each mixable layer 1 .. n_layers − 1."""
    input_shape = getattr(backbone, "input_shape", None)
    if input_shape is None:
        raise ConfigError(
            f"learner 'tnet' needs a backbone with an 'input_shape' attribute to size its transforms; "
            f"{type(backbone).__name__} has none"
        )
    with torch.no_grad():
        reference = next(backbone.parameters())
        h = torch.zeros(2, *input_shape, device=reference.device, dtype=reference.dtype)
        channels = []
        for layer in range(1, backbone.n_layers):
            h = backbone(h, start=layer - 1, stop=layer)
            channels.append(h.shape[1])
    return channels


def linear_maps(backbone: nn.Module) -> list[tuple[str, nn.Conv2d | nn.Linear]]:
    """The first convolution or linear map of each block, then the head, each with its parameter-name prefix."""
    blocks, head = getattr(backbone, "blocks", None), getattr(backbone, "head", None)
    if blocks is None or not isinstance(head, nn.Linear):
        raise ConfigError(
            f"learner 'tnet' with transform_at = 'conv' needs a backbone of blocks and a linear head (a LayeredNet, "
            f"like conv4 and mlp); {type(backbone).__name__} is not; use transform_at = 'block'"
        )
    maps: list[tuple[str, nn.Conv2d | nn.Linear]] = []
    for index, block in enumerate(blocks):
        first = next(((n, m) for n, m in block.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)), None)
        if first is None:
            raise ConfigError(
                f"learner 'tnet' with transform_at = 'conv': block {index} has no convolution or linear map"
            )
        maps.append((".".join(filter(None, ("blocks", str(index), first[0]))), first[1]))
    return [*maps, ("head", head)]


def transform_channels(backbone: nn.Module, transform_at: TransformAt) -> list[int]:
    """Size of T-Net's transform :func:`transform_name` ``(1)``, ``(2)``, ...: hidden channels at each mixable layer
    (``block``), or output channels of each block's first linear map and of the head (``conv``)."""
    if transform_at == "block":
        return hidden_channels(backbone)
    return [m.out_channels if isinstance(m, nn.Conv2d) else m.out_features for _, m in linear_maps(backbone)]


@dataclass(frozen=True)
class Network:
    """The backbone called on a parameter dict, with T-Net's transforms where ``transform_at`` says (none if None).

    ``conv``: the transform ``M`` after a linear map ``W x + b`` is folded into it (``(M W) x + M b``, the same
    function and derivatives), so the backbone runs unchanged.
    """

    backbone: nn.Module
    transform_at: TransformAt | None = None
    names: frozenset[str] = field(init=False)
    maps: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", frozenset(name for name, _ in self.backbone.named_parameters()))
        maps = tuple(prefix for prefix, _ in linear_maps(self.backbone)) if self.transform_at == "conv" else ()
        object.__setattr__(self, "maps", maps)

    @property
    def n_layers(self) -> int:
        return self.backbone.n_layers

    @property
    def representation_layer(self) -> int:
        return self.backbone.n_layers - 1

    def __call__(self, params: Params, h: Tensor, start: int = 0, stop: int | None = None) -> Tensor:
        weights = {name: params[name] for name in self.names}
        if self.transform_at == "conv":
            # Block ``layer - 1`` ends at mixable layer ``layer``; the head is map n_layers.
            for layer in range(start + 1, self.n_layers + 1 if stop is None else stop + 1):
                transform, prefix = params[transform_name(layer)], self.maps[layer - 1]
                weight = weights[f"{prefix}.weight"]
                weights[f"{prefix}.weight"] = (transform @ weight.flatten(1)).reshape(weight.shape)
                if f"{prefix}.bias" in weights:
                    weights[f"{prefix}.bias"] = transform @ weights[f"{prefix}.bias"]
        if self.transform_at != "block":
            return functional_call(self.backbone, weights, (h,), {"start": start, "stop": stop})
        for layer in range(start, self.representation_layer if stop is None else stop):
            h = functional_call(self.backbone, weights, (h,), {"start": layer, "stop": layer + 1})
            h = torch.movedim(torch.movedim(h, 1, -1) @ params[transform_name(layer + 1)].T, -1, 1)
        if stop is not None:
            return h
        return functional_call(self.backbone, weights, (h,), {"start": self.representation_layer})


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

    def step_size(self, params: Params, name: str) -> Tensor | float:
        return params[lr_name(name)] if self.learned_lrs else self.lr


def use_vmap(vectorize: Vectorize, device: torch.device, network: Network) -> bool:
    """``auto``: vmap, except for convolutional backbones on CPU, where per-task weights turn each convolution into a
    grouped one that is slower than a loop over tasks (benchmarks/bench_learners.py); fully connected layers batch
    into fast batched matrix products (6x faster than the loop for the sinusoid MLP on CPU)."""
    if vectorize != "auto":
        return vectorize == "vmap"
    convolutional = any(isinstance(module, nn.Conv2d) for module in network.backbone.modules())
    return device.type != "cpu" or not convolutional


def map_tasks(fn: Callable[[Params, Any], Any], shared: Params, batched: Any, vmap: bool) -> Any:
    """``fn(shared, one task's slice of batched)`` for every task, outputs stacked along a new task dimension.

    ``batched`` is a pytree of tensors with a leading task dimension. ``vmap`` runs one vectorized computation;
    otherwise a Python loop over tasks (the same function, so both paths give the same numbers).
    """
    if vmap:
        return torch.func.vmap(fn, in_dims=(None, 0))(shared, batched)
    leaves, spec = pytree.tree_flatten(batched)
    outputs = [fn(shared, pytree.tree_unflatten([leaf[i] for leaf in leaves], spec)) for i in range(leaves[0].shape[0])]
    flat_outputs = [pytree.tree_flatten(output)[0] for output in outputs]
    stacked = [torch.stack(column) for column in zip(*flat_outputs, strict=True)]
    return pytree.tree_unflatten(stacked, pytree.tree_flatten(outputs[0])[1])


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
        subset = pytree.tree_map(lambda t, tasks=tasks: t[tasks.to(t.device)], batched)
        outputs.append(map_tasks(fn_of_layer(value), shared, subset, vmap))
    order = torch.cat(groups).argsort().to(outputs[0].device)
    return torch.cat(outputs)[order]


def detached(params: Params) -> Params:
    return {name: value.detach() for name, value in params.items()}


@dataclass(frozen=True)
class OuterObjective:
    """The outer loss of one meta-batch under a strategy: what MAML-family learners and ProtoNets share.

    ``predict`` turns the outer batch into outputs under a task's parameters (the rest of the network for
    MAML-family learners; distances to the support prototypes for ProtoNets).
    """

    network: Network
    strategy: Strategy
    loss: Loss
    predict: Predict
    lookahead_lr: float
    vmap: bool

    def task_loss(self, layer: int) -> Callable[[Params, tuple], Tensor]:
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
        """Plan, let the strategy refine the plan, then the mean outer loss over tasks.

        Under ``vmap`` one graph spans the meta-batch. In the per-task loop each task's meta-gradient is taken as
        soon as its loss is known, which frees its graph: the loop holds one task's graph, not the meta-batch's (30x
        less memory at meta-batch 32, and faster: benchmarks/README.md); the loss returned carries the summed
        gradients to its ``backward()``.
        """
        data = (tasks.support_x, tasks.soft_targets(tasks.support_y), tasks.query_x, tasks.soft_targets(tasks.query_y))
        plan = self.strategy.plan(rng, tasks, self.network.n_layers)
        differentiable = torch.is_grad_enabled() and any(value.requires_grad for value in params.values())
        if self.vmap or not differentiable:
            fast = map_tasks(adapt, params, data[:2], self.vmap)
            plan = self.strategy.refine(plan, self.heldout_loss(params, lambda: fast, data))
        else:

            def fast_without_graph() -> Params:
                with torch.no_grad():
                    return map_tasks(adapt, detached(params), data[:2], vmap=False)

            plan = self.strategy.refine(plan, self.heldout_loss(params, fast_without_graph, data))
            if not any(tensor.requires_grad for tensor in pytree.tree_leaves(plan.tensors)):
                return self.task_by_task(params, adapt, plan, data)
            # A plan that is itself differentiable joins the tasks' graphs: they are kept until the one backward.
            fast = map_tasks(adapt, params, data[:2], vmap=False)
        return self.losses(params, fast, plan, data).mean()

    def task_by_task(self, params: Params, adapt: Adapt, plan: MixPlan, data: tuple[Tensor, ...]) -> Tensor:
        """The mean outer loss, each task adapted, scored and differentiated in turn (see :meth:`meta_loss`)."""
        names = [name for name, value in params.items() if value.requires_grad]
        n_tasks = data[0].shape[0]
        losses, total = [], [torch.zeros_like(params[name]) for name in names]
        for i in range(n_tasks):
            support_x, support_t, query_x, query_t = (tensor[i] for tensor in data)
            fast = adapt(params, (support_x, support_t))
            layer = plan.layer if isinstance(plan.layer, int) else plan.layer[i]
            plan_tensors = pytree.tree_map(lambda tensor, i=i: tensor[i], plan.tensors)
            loss = self.task_loss(layer)(params, (fast, plan_tensors, support_x, support_t, query_x, query_t))
            grads = torch.autograd.grad(loss / n_tasks, [params[name] for name in names], allow_unused=True)
            for accumulated, grad in zip(total, grads, strict=True):
                if grad is not None:
                    accumulated.add_(grad)
            losses.append(loss.detach())
        return WithGradients.apply(torch.stack(losses).mean(), tuple(total), *(params[name] for name in names))


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


TaskProbe = Callable[[Params, int], tuple[Tensor, Tensor, Tensor | None]]
"""``probe(init, i)``: task ``i``'s support loss, query loss (both differentiable w.r.t. ``init``) and support
representations ``[S, ...]`` before the head (``None`` when they have no meaning, e.g. regression)."""


def task_diagnostics(params: Params, names: frozenset[str], tasks: TaskBatch, probe: TaskProbe) -> dict[str, float]:
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
