"""Tiny, fast stand-ins for every component kind, registered as a test plugin module.

Load with ``Registry.load(extra_plugins=[fake_components], entry_points=False)``. The learner's parameters trigger
the runner's failure paths: ``fail_at`` raises at a meta-step, ``nan_at`` returns a NaN loss, ``refuse`` makes a
strategy not applicable.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from metabench import MixPlan, OuterBatch, Param, Register, TaskBatch, TaskShape, hookimpl, parameters
from metabench.interfaces import ImageSplit, Params, SamplerContext, Strategy


class FakeImages:
    """Classes whose 4×4 images are a fixed class pattern plus noise: learnable in a few steps."""

    task_type = "classification"
    input_shape = (1, 4, 4)

    def __init__(self, examples: int = 6):
        rng = torch.Generator().manual_seed(0)
        patterns = torch.rand(40, 1, 1, 4, 4, generator=rng)
        noise = 0.3 * torch.rand(40, examples, 1, 4, 4, generator=rng)
        images = ((0.7 * patterns + noise) * 255).to(torch.uint8)
        names = tuple(f"class{i}" for i in range(40))
        self._splits = {
            "train": ImageSplit(images[:20], names[:20]),
            "val": ImageSplit(images[20:30], names[20:30]),
            "test": ImageSplit(images[30:], names[30:]),
        }

    def split(self, name: str) -> ImageSplit:
        return self._splits[name]

    def evaluation_tasks(self, split: str) -> TaskBatch | None:
        return None


class FakeSampler:
    """N random classes, K+Q random examples of each; labels 0..N-1 in class order."""

    def bind(self, split: ImageSplit, shape: TaskShape, context: SamplerContext, *, role: str) -> Any:
        n_way, k, q = shape.n_way, shape.k_shot, shape.k_query
        images = split.images.to(context.device).float() / 255

        def source(n: int, generator: torch.Generator) -> TaskBatch:
            classes = torch.rand(n, split.n_classes, generator=generator).argsort(1)[:, :n_way]
            examples = torch.rand(n, n_way, images.shape[1], generator=generator).argsort(2)[..., : k + q]
            picked = images[classes[..., None], examples]  # [n, N, K+Q, C, H, W]
            labels = torch.arange(n_way).expand(n, k + q, n_way).transpose(1, 2)
            support, query = picked[:, :, :k].flatten(1, 2), picked[:, :, k:].flatten(1, 2)
            return TaskBatch(support, labels[:, :, :k].flatten(1), query, labels[:, :, k:].flatten(1), n_way)

        return source


class FakeBackbone(nn.Module):
    n_layers = 2
    head_prefix = "head"

    def __init__(self, input_shape: tuple[int, ...], out_dim: int, hidden: int = 8):
        super().__init__()
        self.body = nn.Linear(int(torch.tensor(input_shape).prod()), hidden)
        self.head = nn.Linear(hidden, out_dim)

    def forward(self, h: Tensor, start: int = 0, stop: int | None = None) -> Tensor:
        if stop == 0:  # layer 0 is the input
            return h
        if start == 0:
            h = torch.relu(self.body(h.flatten(1)))
        return h if stop == 1 else self.head(h)


class FakeStrategy:
    """``query``: the outer loss on the query set; ``support``: on the support set (a different number)."""

    def __init__(self, on_query: bool):
        self.plain = on_query

    def plan(self, rng: torch.Generator, tasks: TaskBatch, n_layers: int) -> MixPlan:
        return MixPlan(0, {"u": torch.rand(tasks.n_tasks, generator=rng)})

    def apply(
        self, plan: MixPlan, encode: Any, support_x: Tensor, support_t: Tensor, query_x: Tensor, query_t: Tensor
    ) -> OuterBatch:
        x, t = (query_x, query_t) if self.plain else (support_x, support_t)
        return OuterBatch(x, t, 0)

    def refine(self, plan: MixPlan, heldout_loss: Any) -> MixPlan:
        return plan


@parameters(
    Param("fail_at", int, 0, "raise at this meta-step (0: never)", low=0),
    Param("nan_at", int, 0, "NaN loss at this meta-step (0: never)", low=0),
    Param("refuse", str, "", "strategy reported as not applicable"),
    Param("meta_trains", bool, True, "False: evaluate the initialisation only"),
    Param("nan_eval", bool, False, "True: every evaluation score is NaN"),
)
class FakeLearner:
    """No inner loop: ``pre`` is the network's accuracy, ``post`` the nearest-prototype accuracy of its features."""

    def __init__(
        self, fail_at: int = 0, nan_at: int = 0, refuse: str = "", meta_trains: bool = True, nan_eval: bool = False
    ):
        self.fail_at, self.nan_at, self.refuse, self.meta_trains = fail_at, nan_at, refuse, meta_trains
        self.nan_eval = nan_eval
        self.calls = 0

    def init_params(self, backbone: nn.Module, generator: torch.Generator) -> Params:
        self.backbone = backbone
        return {name: p.detach().clone().requires_grad_() for name, p in backbone.named_parameters()}

    def incompatible(self, strategy: Strategy, strategy_name: str, task_type: str) -> str | None:
        return f"fake learner refuses '{strategy_name}'" if strategy_name == self.refuse else None

    def _forward(self, params: Params, x: Tensor, start: int = 0, stop: int | None = None) -> Tensor:
        return functional_call(self.backbone, params, (x,), {"start": start, "stop": stop})

    def meta_loss(self, params: Params, tasks: TaskBatch, strategy: Strategy, rng: torch.Generator) -> Any:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError(f"fake failure at step {self.calls}")
        plan = strategy.plan(rng, tasks, self.backbone.n_layers)
        losses = []
        for i in range(tasks.n_tasks):
            task = tasks.select(i)
            outer = strategy.apply(
                plan.task(i),
                lambda x, layer: x,
                task.support_x[0],
                task.soft_targets(task.support_y)[0],
                task.query_x[0],
                task.soft_targets(task.query_y)[0],
            )
            logits = self._forward(params, outer.h, start=outer.layer)
            losses.append(-(outer.targets * logits.log_softmax(-1)).sum(-1).mean())
        loss = torch.stack(losses).mean()
        if self.calls == self.nan_at:
            loss = loss * float("nan")
        return loss, {"u": float(plan.tensors["u"].mean())}

    def _prototype_accuracy(self, params: Params, tasks: TaskBatch, x: Tensor, y: Tensor) -> Tensor:
        support = self._forward(params, tasks.support_x.flatten(0, 1), stop=1).unflatten(0, tasks.support_x.shape[:2])
        onehot = tasks.soft_targets(tasks.support_y)
        prototypes = onehot.transpose(1, 2) @ support / onehot.sum(1)[..., None]
        features = self._forward(params, x.flatten(0, 1), stop=1).unflatten(0, x.shape[:2])
        return (torch.cdist(features, prototypes).argmin(-1) == y).float().mean(1)

    def evaluate(self, params: Params, tasks: TaskBatch) -> dict[str, Tensor]:
        with torch.no_grad():

            def network_accuracy(x: Tensor, y: Tensor) -> Tensor:
                return (self._forward(params, x.flatten(0, 1)).argmax(-1).view(y.shape) == y).float().mean(1)

            scores = {
                "pre": network_accuracy(tasks.query_x, tasks.query_y),
                "post": self._prototype_accuracy(params, tasks, tasks.query_x, tasks.query_y),
                "train_pre": network_accuracy(tasks.support_x, tasks.support_y),
                "train_post": self._prototype_accuracy(params, tasks, tasks.support_x, tasks.support_y),
            }
        return {name: s * float("nan") for name, s in scores.items()} if self.nan_eval else scores

    def diagnostics(self, params: Params, tasks: TaskBatch) -> dict[str, float]:
        return {"grad_norm_support": 1.0, "grad_norm_query": 2.0}


@hookimpl
def metabench_register_datasets(register: Register) -> None:
    register("fake-images", parameters(Param("examples", int, 6, "per class", low=2))(FakeImages), summary="40 classes")


@hookimpl
def metabench_register_samplers(register: Register) -> None:
    register("standard", FakeSampler, summary="uniform N-way K-shot tasks")


@hookimpl
def metabench_register_backbones(register: Register) -> None:
    register("fake-mlp", parameters(Param("hidden", int, 8, "width", low=1))(FakeBackbone), summary="one hidden layer")


@hookimpl
def metabench_register_learners(register: Register) -> None:
    register("fake-learner", FakeLearner, summary="no inner loop; prototype accuracy")


@hookimpl
def metabench_register_strategies(register: Register) -> None:
    register("query", lambda: FakeStrategy(on_query=True), summary="outer loss on the query set")
    register("support", lambda: FakeStrategy(on_query=False), summary="outer loss on the support set")
