"""The standard 4-block convolutional backbone of few-shot learning (Vinyals et al.; MAML)."""

from __future__ import annotations

from torch import nn

from metabench import ConfigError, Param, parameters
from metabench.plugins.backbones.layers import BatchNorm, LayeredNet, flat_size
from metabench.plugins.backbones.pooling import MaxPool2x2


@parameters(
    Param("filters", int, 64, "channels of every conv block", low=1),
    Param("blocks", int, 4, "number of conv blocks (mixable layers 1..blocks)", low=1),
)
def conv4(*, input_shape: tuple[int, ...], out_dim: int, filters: int, blocks: int) -> LayeredNet:
    """``blocks`` × (3×3 conv with ``filters`` channels, batch norm with batch statistics, ReLU, 2×2 max-pool), then
    a linear head. Mixable layers: the input and each block's output; the last block's output is flattened."""
    if len(input_shape) != 3:
        raise ConfigError(
            f"backbone 'conv4' needs image inputs (channels, height, width), got input_shape {input_shape}"
        )
    if min(input_shape[1:]) < 2**blocks:
        raise ConfigError(
            f"backbone 'conv4': images of {input_shape[1]}x{input_shape[2]} are too small for {blocks} 2x2 poolings "
            f"(need at least {2**blocks}x{2**blocks}); lower 'blocks'"
        )
    layers: list[nn.Module] = []
    channels = input_shape[0]
    for _ in range(blocks):
        # Pooling before ReLU computes the same function (ReLU is monotone) and the same gradients almost everywhere,
        # with ReLU on a quarter of the elements (benchmarks/README.md).
        layers.append(
            nn.Sequential(nn.Conv2d(channels, filters, 3, padding=1), BatchNorm(filters), MaxPool2x2(), nn.ReLU())
        )
        channels = filters
    layers[-1].append(nn.Flatten(1))
    features = flat_size(nn.Sequential(*layers), input_shape)
    return LayeredNet(input_shape, layers, nn.Linear(features, out_dim))
