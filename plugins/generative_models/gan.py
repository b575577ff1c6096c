"""A mode-seeking GAN (MSGAN, Mao et al. 2019) with the generator and discriminator of LASIUM Sec. 7.1."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabench import Param, parameters
from metabench.plugins.generative_models.training import (
    ImageModel,
    as_unit_float,
    epochs_bar,
    minibatches,
    reinitialise,
    training_params,
)


@parameters(
    Param("latent_dim", int, 128, "latent size (paper code: 128 for Omniglot)", low=1),
    Param("width", int, 32, "generator filters; discriminator width/2, width, width (paper: 128)", low=2),
    *training_params(20, 128, 3e-4, "500 epochs, Adam 3e-4 in the authors' code", "authors' code: 128"),
    Param(
        "ms_weight",
        float,
        0.01,
        "weight of the mode-seeking term (MSGAN: 1; at CPU scale 1 and 0.1 kept the generator from learning at all, "
        "measured on 8x8 bars)",
        low=0.0,
    ),
)
class MSGAN(ImageModel):
    """Generator: a dense layer to ``width`` maps of a quarter of the image size (leaky ReLU 0.2), two 4×4 stride-2
    transposed convolutions (leaky ReLU), and a 7×7 convolution to the image channels with a sigmoid.
    Discriminator: three 3×3 stride-2 convolutions with ``width/2``, ``width``, ``width`` filters (leaky ReLU), a
    global max pool and a dense logit. Non-saturating GAN losses plus the mode-seeking term: the generator also
    minimises ``1 / (mean|G(z1) − G(z2)| / mean|z1 − z2| + 1e-5)`` over pairs of latents, weighted ``ms_weight``.

    The paper's Omniglot GAN has ``width = 128``, ``latent_dim = 128`` and trains 500 epochs (batch 128, Adam 3e-4
    and mode-seeking weight 1 in the authors' code); the defaults here are smaller so that training on the Omniglot
    meta-train images takes minutes on a CPU, and the mode-seeking weight is 0.01: early in training the term
    (about 500 at initialisation) swamps the adversarial loss, and at weights 1 and 0.1 a short training never made
    realistic images. Anchors come from the ``N(0, I)`` prior (no encoder).
    """

    can_encode = False

    def __init__(self, image_shape: tuple[int, ...], *, width: int, ms_weight: float, **settings: Any):
        super().__init__(image_shape, width=width, **settings)
        channels = image_shape[0]
        self.ms_weight = ms_weight
        self.generator = nn.Sequential(
            nn.Linear(self.latent_dim, math.prod(self.base)),
            nn.LeakyReLU(0.2),
            nn.Unflatten(1, self.base),
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, channels, 7, padding=3),
        )
        half = max(width // 2, 1)
        self.discriminator = nn.Sequential(
            nn.Conv2d(channels, half, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(half, width, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            nn.Linear(width, 1),
        )

    def decode(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.crop(self.generator(z)))

    def encode(self, x: Tensor) -> Tensor:
        raise NotImplementedError("the GAN has no encoder (can_encode is False): its anchors come from the prior")

    def fit(self, images: Tensor, rng: torch.Generator, progress: bool) -> list[float]:
        """Train on ``uint8 [N, C, H, W]`` images; the curve is the discriminator's loss (real-vs-generated binary
        cross-entropy, ``2 ln 2`` at chance) averaged over each epoch. ``history`` also keeps the generator's
        adversarial loss and the mode-seeking term."""
        reinitialise(self, rng)
        self.to(images.device).train()
        d_optimiser = torch.optim.Adam(self.discriminator.parameters(), lr=self.lr, betas=(0.5, 0.999))
        g_optimiser = torch.optim.Adam(self.generator.parameters(), lr=self.lr, betas=(0.5, 0.999))
        history: dict[str, list[float]] = {"d_loss": [], "g_loss": [], "mode_seeking": []}
        bar = epochs_bar(self.epochs, progress, "training gan")
        for _ in bar:
            sums = dict.fromkeys(history, 0.0)
            for index in minibatches(len(images), self.batch_size, rng, images.device):
                real = as_unit_float(images[index])
                z1, z2 = self.sample_prior(len(index), rng), self.sample_prior(len(index), rng)
                fake = self.decode(torch.cat([z1, z2]))

                real_logits = self.discriminator(real)
                fake_logits = self.discriminator(fake.detach())
                d_loss = F.binary_cross_entropy_with_logits(
                    real_logits, torch.ones_like(real_logits)
                ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
                d_optimiser.zero_grad(set_to_none=True)
                d_loss.backward()
                d_optimiser.step()

                fooled_logits = self.discriminator(fake)
                g_loss = F.binary_cross_entropy_with_logits(fooled_logits, torch.ones_like(fooled_logits))
                fake1, fake2 = fake.chunk(2)
                ratio = (fake1 - fake2).abs().mean(dim=(1, 2, 3)) / (z1 - z2).abs().mean(dim=1)
                mode_seeking = 1.0 / (ratio.mean() + 1e-5)
                g_optimiser.zero_grad(set_to_none=True)
                (g_loss + self.ms_weight * mode_seeking).backward()
                g_optimiser.step()

                for name, value in zip(history, (d_loss, g_loss, mode_seeking), strict=True):
                    sums[name] += value.item() * len(index)
            for name in history:
                history[name].append(sums[name] / len(images))
            bar.set_postfix(d_loss=f"{history['d_loss'][-1]:.3f}", g_loss=f"{history['g_loss'][-1]:.3f}")
        self.history = history
        return history["d_loss"]
