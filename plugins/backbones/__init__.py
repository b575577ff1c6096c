"""Built-in backbones: registered through the entry-point group ``metabench``."""

from __future__ import annotations

from metabench import hookimpl
from metabench.plugins.backbones.conv4 import conv4
from metabench.plugins.backbones.mlp import ACTIVATIONS, mlp
from metabench.registry import Param, Register


@hookimpl
def metabench_register_backbones(register: Register) -> None:
    """conv4 and mlp."""
    register(
        "conv4",
        conv4,
        summary="4 conv blocks (3x3 conv, batch-statistics batch norm, ReLU, 2x2 max-pool) and a linear head.",
        params=[
            Param("filters", int, 64, "channels of every conv block", low=1),
            Param("blocks", int, 4, "number of conv blocks (mixable layers 1..blocks)", low=1),
        ],
    )
    register(
        "mlp",
        mlp,
        summary="Fully connected blocks of configurable widths and activation, optional batch norm; linear head.",
        params=[
            Param("widths", list, [40, 40], "width of each hidden block", item_type=int, low=1),
            Param("activation", str, "relu", "activation after each block", choices=tuple(ACTIVATIONS)),
            Param("batch_norm", bool, False, "batch norm (batch statistics) after each linear layer"),
        ],
    )
