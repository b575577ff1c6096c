"""What the mixing strategies share: the layer choice, Beta/Dirichlet draws, pairings, and the mixing arithmetic.

Random draws happen here, on the CPU generator a strategy's ``plan`` receives, with a leading task dimension; the
arithmetic (``mix``, ``combine``, ``mix_support_query``) is pure tensor code on one task, so it runs under ``vmap``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from metabench import ConfigError, MixPlan, OuterBatch, Param, TaskBatch
from metabench.interfaces import Encode

LAYERS_PARAM = Param(
    "layers",
    list,
    None,
    "candidate mixing layers C (0 = inputs, n_layers-1 = the representation before the head), drawn uniformly "
    "per task or per meta-batch (layer_per; once per meta-batch where a strategy has no layer_per); none = every "
    "mixable layer of the backbone",
    item_type=int,
    low=0,
    nullable=True,
)
BETA_PARAMS = (
    Param(
        "alpha",
        float,
        2.0,
        "Beta(alpha, beta) parameter alpha of the mixing weight λ (the paper: 2 for images, "
        "0.5 for regression; set it per benchmark)",
        low=1e-3,
    ),
    Param("beta", float, 2.0, "Beta(alpha, beta) parameter beta of the mixing weight λ (see alpha)", low=1e-3),
)
LAYER_PER_PARAM = Param(
    "layer_per",
    str,
    "task",
    "how often the mixing layer is drawn: once per task, as MetaMix Algorithm 1 (line 7, inside the loop over "
    "tasks) does, or once per meta-batch, shared by its tasks (cheaper: one vectorized pass instead of one per "
    "distinct layer)",
    choices=("task", "meta-batch"),
)
MIXUP_PARAMS = (LAYERS_PARAM, LAYER_PER_PARAM, *BETA_PARAMS)
LayerPer = Literal["task", "meta-batch"]


class PlanOnlyStrategy:
    """Defaults of the :class:`metabench.interfaces.Strategy` protocol for strategies that do not learn their plan."""

    plain = False

    def refine(self, plan: MixPlan, heldout_loss: Callable[[MixPlan], Tensor]) -> MixPlan:
        return plan


class LayerMixStrategy(PlanOnlyStrategy):
    """The frame of the strategies of :data:`MIXUP_PARAMS` (MetaMix and its variants, Mixup(Ds,Ds), Mixup(Dq,Dq)):
    mixing at a layer drawn from ``layers`` (per task or per meta-batch) with weights ``λ ~ Beta(alpha, beta)``."""

    def __init__(self, layers: list[int] | None, layer_per: LayerPer, alpha: float, beta: float):
        self.layers = check_layers(layers)
        self.layer_per = layer_per
        self.alpha = alpha
        self.beta = beta

    def draw_layer(self, rng: torch.Generator, n_layers: int, n_tasks: int) -> int | tuple[int, ...]:
        return draw_layer(rng, self.layers, n_layers, n_tasks, self.layer_per)

    def draw_lam(self, rng: torch.Generator, shape: tuple[int, ...]) -> Tensor:
        return draw_beta(rng, self.alpha, self.beta, shape)


def check_layers(layers: list[int] | None) -> list[int] | None:
    """The ``layers`` parameter as given, once known not to be empty (its upper bound needs the backbone)."""
    if layers is not None and not layers:
        raise ConfigError("strategy parameter 'layers' = []: give at least one layer, or none for all mixable layers")
    return layers


def draw_layer(
    rng: torch.Generator, layers: list[int] | None, n_layers: int, n_tasks: int, per: LayerPer
) -> int | tuple[int, ...]:
    """Mixing layers, uniform over the candidates: one shared by the meta-batch (``per = "meta-batch"``), or one per
    task (``per = "task"``), which a learner runs as one vectorized pass per distinct layer (a vmapped computation
    cannot branch per task)."""
    candidates = list(range(n_layers)) if layers is None else layers
    missing = sorted({layer for layer in candidates if layer >= n_layers})
    if missing:
        raise ConfigError(
            f"strategy parameter 'layers' = {layers}: layer(s) {missing} do not exist; this backbone's mixable layers "
            f"are 0..{n_layers - 1}"
        )
    index = torch.randint(len(candidates), (n_tasks if per == "task" else 1,), generator=rng).tolist()
    return tuple(candidates[i] for i in index) if per == "task" else candidates[index[0]]


def _log_gamma(rng: torch.Generator, concentration: Tensor) -> Tensor:
    # torch.distributions takes no generator, so draw Gamma(a) directly. In log space, as log Gamma(a + 1) + log(U) / a,
    # so that a small concentration cannot underflow to 0 and turn the normalised weights into 0 / 0.
    boosted = torch._standard_gamma(concentration + 1, generator=rng)
    uniform = torch.rand(concentration.shape, generator=rng, dtype=concentration.dtype)
    return boosted.log() + uniform.log() / concentration


def draw_beta(rng: torch.Generator, alpha: float, beta: float, shape: tuple[int, ...]) -> Tensor:
    """``λ ~ Beta(alpha, beta)`` of ``shape`` (float32, CPU)."""
    log_a = _log_gamma(rng, torch.full(shape, alpha, dtype=torch.float64))
    log_b = _log_gamma(rng, torch.full(shape, beta, dtype=torch.float64))
    return torch.sigmoid(log_a - log_b).float()


def draw_dirichlet(rng: torch.Generator, concentration: Tensor, size: int) -> Tensor:
    """Weights ``[*concentration.shape, size]`` ~ the symmetric Dirichlet of each entry of ``concentration``."""
    expanded = concentration.double().unsqueeze(-1).expand(*concentration.shape, size)
    return torch.softmax(_log_gamma(rng, expanded), dim=-1).float()


def draw_permutations(rng: torch.Generator, n_tasks: int, size: int) -> Tensor:
    """One random permutation of ``range(size)`` per task: ``[n_tasks, size]``."""
    return torch.rand(n_tasks, size, generator=rng).argsort(dim=-1)


def draw_pairing(rng: torch.Generator, n_tasks: int, n_support: int, n_query: int) -> Tensor:
    """For each query sample, the index of the support sample it is mixed with: ``[n_tasks, n_query]``.

    A random one-to-one match while the support is at least as large as the query (with K_s = K_q, Eq. 3's diagonal
    λ pairs sample j with sample j; MetaMix's released code shuffles the support first, so that a sampler's class
    order does not pair each query with its own class); when K_s < K_q each query sample draws a support sample
    uniformly, with replacement (the paper, after Eq. 3).
    """
    if n_support >= n_query:
        return draw_permutations(rng, n_tasks, n_support)[:, :n_query]
    return torch.randint(n_support, (n_tasks, n_query), generator=rng)


def meta_batch_sizes(tasks: TaskBatch) -> tuple[int, int, int]:
    """``(n_tasks, support size, query size)`` of a meta-batch."""
    return tasks.n_tasks, tasks.support_x.shape[1], tasks.query_x.shape[1]


def make_plan(layer: int | tuple[int, ...], tasks: TaskBatch, **tensors: Tensor) -> MixPlan:
    """A plan whose tensors (drawn on the CPU generator) live on the tasks' device."""
    return MixPlan(layer, {name: tensor.to(tasks.device) for name, tensor in tensors.items()})


def mix(first: Tensor, second: Tensor, lam: Tensor) -> Tensor:
    """``λ·first + (1 − λ)·second`` per sample: ``lam [B]`` broadcast over the non-batch dimensions of ``[B, ...]``."""
    lam = lam.reshape(lam.shape + (1,) * (first.dim() - lam.dim())).to(first.dtype)
    return lam * first + (1 - lam) * second


def combine(weights: Tensor, batch: Tensor) -> Tensor:
    """Convex combinations ``[n, ...]`` of a batch ``[m, ...]`` with ``weights [n, m]`` (MultiMix Eq. 6-7)."""
    return torch.tensordot(weights.to(batch.dtype), batch, dims=1)


def mix_support_query(
    plan: MixPlan, encode: Encode, support_x: Tensor, support_t: Tensor, query_x: Tensor, query_t: Tensor
) -> OuterBatch:
    """MetaMix Eq. 3 on one task: query sample j mixed with support sample ``pair[j]`` at the plan's layer.

    ``lam`` is ``[Q]`` (one mix per pair) or ``[Q, K]`` (K mixes per pair, flattened pair-major). Each set is encoded
    whole, then indexed, so that batch statistics inside the backbone are those of the support and query sets.
    """
    pair, lam = plan.tensors["pair"], plan.tensors["lam"]
    per_pair = lam.shape[1] if lam.dim() == 2 else 1
    support_h = encode(support_x, plan.layer)[pair].repeat_interleave(per_pair, dim=0)
    query_h = encode(query_x, plan.layer).repeat_interleave(per_pair, dim=0)
    support_t = support_t[pair].repeat_interleave(per_pair, dim=0)
    query_t = query_t.repeat_interleave(per_pair, dim=0)
    lam = lam.reshape(-1)
    return OuterBatch(mix(support_h, query_h, lam), mix(support_t, query_t, lam), plan.layer)
