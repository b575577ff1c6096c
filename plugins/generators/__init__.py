"""Built-in generative models for the LASIUM samplers: ``vae`` and ``gan`` (see :mod:`.training` for the cache and
for registering a pretrained generator from another package)."""

from __future__ import annotations

from metabench import hookimpl
from metabench.plugins.generators.gan import MSGAN
from metabench.plugins.generators.vae import ConvVAE
from metabench.registry import Param, Register


def _training_params(epochs: int, batch_size: int, lr: float, paper: str, batch_note: str) -> list[Param]:
    return [
        Param("epochs", int, epochs, f"training epochs over the unlabelled images (paper: {paper})", low=1),
        Param("batch_size", int, batch_size, f"images per training step ({batch_note})", low=1),
        Param("lr", float, lr, "Adam learning rate", low=0.0),
    ]


@hookimpl
def metabench_register_generators(register: Register) -> None:
    register(
        "vae",
        ConvVAE,
        summary="Convolutional VAE of LASIUM Sec. 7.1; anchors from encoded real images.",
        params=[
            Param("latent_dim", int, 20, "latent size (paper: 20 for 28x28 Omniglot)", low=1),
            Param("width", int, 32, "filters of every conv layer (paper: 64)", low=1),
            *_training_params(
                20, 32, 1e-3, "1000 epochs, lr 0.001", "Omniglot, 10 epochs: 140 nats at batch 32, 156 at 128"
            ),
        ],
    )
    register(
        "gan",
        MSGAN,
        summary="Mode-seeking GAN (MSGAN) of LASIUM Sec. 7.1; anchors from the N(0, I) prior.",
        params=[
            Param("latent_dim", int, 128, "latent size (paper code: 128 for Omniglot)", low=1),
            Param("width", int, 32, "generator filters; discriminator width/2, width, width (paper: 128)", low=2),
            *_training_params(20, 128, 3e-4, "500 epochs, Adam 3e-4 in the authors' code", "authors' code: 128"),
            Param(
                "ms_weight",
                float,
                0.01,
                "weight of the mode-seeking term (MSGAN: 1; at CPU scale 1 and 0.1 kept the generator from learning "
                "at all, measured on 8x8 bars)",
                low=0.0,
            ),
        ],
    )
