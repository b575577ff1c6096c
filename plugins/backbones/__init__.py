"""Built-in backbones: registered through the entry-point group ``metabench``."""

from __future__ import annotations

from metabench import Register, hookimpl
from metabench.plugins.backbones import conv4, mlp


@hookimpl
def metabench_register_backbones(register: Register) -> None:
    """conv4 and mlp."""
    register(
        "conv4",
        conv4.conv4,
        summary="4 conv blocks (3x3 conv, batch-statistics batch norm, ReLU, 2x2 max-pool) and a linear head.",
    )
    register(
        "mlp",
        mlp.mlp,
        summary="Fully connected blocks of configurable widths and activation, optional batch norm; linear head.",
    )
