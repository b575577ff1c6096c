"""Built-in generative models for the LASIUM samplers: ``vae`` and ``gan`` (see :mod:`.training` for the cache and
for registering a pretrained model from another package)."""

from __future__ import annotations

from metabench import Register, hookimpl
from metabench.plugins.generative_models.gan import MSGAN
from metabench.plugins.generative_models.vae import ConvVAE


@hookimpl
def metabench_register_generative_models(register: Register) -> None:
    register("vae", ConvVAE, summary="Convolutional VAE of LASIUM Sec. 7.1; anchors from encoded real images.")
    register("gan", MSGAN, summary="Mode-seeking GAN (MSGAN) of LASIUM Sec. 7.1; anchors from the N(0, I) prior.")
