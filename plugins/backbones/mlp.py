"""Fully connected backbone (sinusoid regression: 2×40 ReLU; MetaMix's drug model: 2×500, batch norm, leaky ReLU)."""

from __future__ import annotations

import math

from torch import nn

from metabench import Param, parameters
from metabench.plugins.backbones.layers import BatchNorm, LayeredNet

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.01), "tanh": nn.Tanh}


@parameters(
    Param("widths", list, [40, 40], "width of each hidden block", item_type=int, low=1),
    Param("activation", str, "relu", "activation after each block", choices=tuple(ACTIVATIONS)),
    Param("batch_norm", bool, False, "batch norm (batch statistics) after each linear layer"),
)
def mlp(
    *, input_shape: tuple[int, ...], out_dim: int, widths: list[int], activation: str, batch_norm: bool
) -> LayeredNet:
    """One block per width: linear, optional batch norm with batch statistics, activation; then a linear head.
    Inputs are flattened first. Mixable layers: the input and each block's output."""
    layers: list[nn.Module] = []
    features = math.prod(input_shape)
    for index, width in enumerate(widths):
        block: list[nn.Module] = [nn.Flatten(1)] if index == 0 else []
        block.append(nn.Linear(features, width))
        if batch_norm:
            block.append(BatchNorm(width))
        block.append(ACTIVATIONS[activation]())
        layers.append(nn.Sequential(*block))
        features = width
    if not layers:
        layers.append(nn.Flatten(1))
    return LayeredNet(input_shape, layers, nn.Linear(features, out_dim))
