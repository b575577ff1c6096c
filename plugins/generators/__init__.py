"""Built-in generative models for the LASIUM samplers: ``vae`` and ``gan`` (see :mod:`.training` for the cache and
for registering a pretrained generator from another package)."""

from __future__ import annotations

from metabench import hookimpl
from metabench.plugins.generators.gan import MSGAN
from metabench.plugins.generators.vae import ConvVAE
from metabench.registry import Param, Register


def _training_params(epochs: int, lr: float, paper: str) -> list[Param]:
    return [
        Param("epochs", int, epochs, f"training epochs over the unlabelled images (paper: {paper})", low=1),
        Param("batch_size", int, 128, "images per training step (paper: 128)", low=1),
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
            *_training_params(20, 1e-3, "1000 epochs, lr 0.001"),
        ],
    )
    register(
        "gan",
        MSGAN,
        summary="Mode-seeking GAN (MSGAN) of LASIUM Sec. 7.1; anchors from the N(0, I) prior.",
        params=[
            Param("latent_dim", int, 128, "latent size (paper code: 128 for Omniglot)", low=1),
            Param("width", int, 32, "generator filters; discriminator width/2, width, width (paper: 128)", low=2),
            *_training_params(20, 3e-4, "500 epochs, Adam 3e-4 in the authors' code"),
            Param("ms_weight", float, 1.0, "weight of the mode-seeking term (MSGAN: 1)", low=0.0),
        ],
    )
