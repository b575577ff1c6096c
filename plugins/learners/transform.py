"""T-Net's meta-learned channel transforms (Lee & Choi, 2018): where they act, their sizes, and the network that
applies them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call

from metabench import ConfigError, Param
from metabench.interfaces import Params
from metabench.plugins.learners.network import Network

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


def transform_name(layer: int) -> str:
    """The meta-parameter holding T-Net's ``layer``-th transformation (1-based; where it acts:
    :class:`TransformedNetwork`)."""
    return f"transform.{layer}"


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
class TransformedNetwork(Network):
    """The backbone with T-Net's transforms (the meta-parameters :func:`transform_name`) where ``transform_at`` says.

    ``conv``: the transform ``M`` after a linear map ``W x + b`` is folded into it (``(M W) x + M b``, the same
    function and derivatives), so the backbone runs unchanged.
    """

    transform_at: TransformAt = "conv"
    maps: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        maps = tuple(prefix for prefix, _ in linear_maps(self.backbone)) if self.transform_at == "conv" else ()
        object.__setattr__(self, "maps", maps)

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
            return functional_call(self.backbone, weights, (h,), {"start": start, "stop": stop})
        for layer in range(start, self.representation_layer if stop is None else stop):
            h = functional_call(self.backbone, weights, (h,), {"start": layer, "stop": layer + 1})
            h = torch.movedim(torch.movedim(h, 1, -1) @ params[transform_name(layer + 1)].T, -1, 1)
        if stop is not None:
            return h
        return functional_call(self.backbone, weights, (h,), {"start": self.representation_layer})
