"""The backbone called on a parameter dict: meta-parameters or one task's fast weights, alone or under vmap.

Parameters are plain ``dict[str, Tensor]``; the backbone is called through ``torch.func.functional_call``, so the
same code runs with meta-parameters or with a task's fast weights, one task at a time or under ``torch.func.vmap``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.func import functional_call

from metabench.interfaces import Params


def initial_backbone_params(backbone: nn.Module, generator: torch.Generator) -> Params:
    """Fresh parameters from ``generator`` when the backbone can draw them, else copies of its own."""
    init = getattr(backbone, "init_parameters", None)
    if init is not None:
        return dict(init(generator))
    return {name: p.detach().clone() for name, p in backbone.named_parameters()}


def detached(params: Params) -> Params:
    return {name: value.detach() for name, value in params.items()}


@dataclass(frozen=True)
class Network:
    """``network(params, h, start, stop)``: the backbone's blocks ``start+1 .. stop`` (``stop=None``: through the
    head) on a batch ``h`` under the backbone parameters in ``params``; other entries of ``params`` (a learner's own
    meta-parameters) are ignored."""

    backbone: nn.Module
    names: tuple[str, ...] = field(init=False)
    """The backbone's parameters in its own order: iterating a set would order them by string hash, which differs
    from process to process, and so would the traced graph of a compiled meta-gradient, whose AOTAutograd cache
    key then misses in every new process (issue 25)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(name for name, _ in self.backbone.named_parameters()))

    @property
    def n_layers(self) -> int:
        return self.backbone.n_layers

    @property
    def representation_layer(self) -> int:
        return self.backbone.n_layers - 1

    def __call__(self, params: Params, h: Tensor, start: int = 0, stop: int | None = None) -> Tensor:
        weights = {name: params[name] for name in self.names}
        return functional_call(self.backbone, weights, (h,), {"start": start, "stop": stop})
