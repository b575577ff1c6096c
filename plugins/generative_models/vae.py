"""A convolutional VAE (LASIUM Sec. 7.1): its encoder lets LASIUM take anchors from real images."""

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


def _halved(size: int, times: int) -> int:
    for _ in range(times):
        size = math.ceil(size / 2)
    return size


@parameters(
    Param("latent_dim", int, 20, "latent size (paper: 20 for 28x28 Omniglot)", low=1),
    Param("width", int, 32, "filters of every conv layer (paper: 64)", low=1),
    *training_params(20, 32, 1e-3, "1000 epochs, lr 0.001", "Omniglot, 10 epochs: 140 nats at batch 32, 156 at 128"),
)
class ConvVAE(ImageModel):
    """Encoder: four 3×3 stride-2 conv blocks (batch norm, ReLU) and a dense layer to the posterior's mean and
    log-variance. Decoder: a dense layer to ``width`` maps of a quarter of the image size, then four 3×3 transposed
    conv modules (two of stride 2, two of stride 1; batch norm and ReLU between them, a sigmoid at the end).
    Trained with the standard VAE loss: Bernoulli reconstruction plus KL to the ``N(0, I)`` prior, Adam.

    The paper's Omniglot VAE has ``width = 64`` filters, ``latent_dim = 20`` and trains 1000 epochs at learning rate
    0.001; the defaults here are smaller so that training on the Omniglot meta-train images takes minutes on a CPU.
    """

    can_encode = True

    def __init__(self, image_shape: tuple[int, ...], *, width: int, **settings: Any):
        super().__init__(image_shape, width=width, **settings)
        channels, height, width_px = image_shape

        blocks: list[nn.Module] = []
        for index in range(4):
            blocks += [
                nn.Conv2d(channels if index == 0 else width, width, 3, stride=2, padding=1),
                nn.BatchNorm2d(width),
                nn.ReLU(),
            ]
        self.encoder = nn.Sequential(*blocks, nn.Flatten())
        self.posterior = nn.Linear(width * _halved(height, 4) * _halved(width_px, 4), 2 * self.latent_dim)
        self.expand = nn.Linear(self.latent_dim, math.prod(self.base))
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(width, width, 3, stride=2, padding=1, output_padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.ConvTranspose2d(width, width, 3, stride=2, padding=1, output_padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.ConvTranspose2d(width, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.ConvTranspose2d(width, channels, 3, padding=1),
        )

    def _posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_var = self.posterior(self.encoder(x)).chunk(2, dim=1)
        return mean, log_var

    def _decode_logits(self, z: Tensor) -> Tensor:
        h = F.relu(self.expand(z)).view(-1, *self.base)
        return self.crop(self.decoder(h))

    def encode(self, x: Tensor) -> Tensor:
        """The posterior means of images ``float [n, C, H, W]`` in ``[0, 1]``."""
        return self._posterior(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self._decode_logits(z))

    def loss(self, x: Tensor, rng: torch.Generator) -> tuple[Tensor, Tensor]:
        """Reconstruction and KL terms, each summed over an image and averaged over the batch (nats)."""
        mean, log_var = self._posterior(x)
        noise = torch.randn(mean.shape, generator=rng, device=rng.device).to(mean.device)
        z = mean + noise * (0.5 * log_var).exp()
        reconstruction = F.binary_cross_entropy_with_logits(self._decode_logits(z), x, reduction="sum") / len(x)
        kl = 0.5 * (mean.square() + log_var.exp() - 1 - log_var).sum() / len(x)
        return reconstruction, kl

    def fit(self, images: Tensor, rng: torch.Generator, progress: bool) -> list[float]:
        """Train on ``uint8 [N, C, H, W]`` images; the curve is the mean negative ELBO per image of each epoch."""
        reinitialise(self, rng)
        self.to(images.device).train()
        optimiser = torch.optim.Adam(self.parameters(), lr=self.lr)
        curve, kls = [], []
        bar = epochs_bar(self.epochs, progress, "training vae")
        for _ in bar:
            total, total_kl = 0.0, 0.0
            for index in minibatches(len(images), self.batch_size, rng, images.device):
                reconstruction, kl = self.loss(as_unit_float(images[index]), rng)
                optimiser.zero_grad(set_to_none=True)
                (reconstruction + kl).backward()
                optimiser.step()
                total += (reconstruction + kl).item() * len(index)
                total_kl += kl.item() * len(index)
            curve.append(total / len(images))
            kls.append(total_kl / len(images))
            bar.set_postfix(loss=f"{curve[-1]:.1f}")
        self.history = {"loss": curve, "kl": kls}
        self._recalibrate_batch_norm(images)
        return curve

    @torch.no_grad()
    def _recalibrate_batch_norm(self, images: Tensor) -> None:
        """Set every batch norm's running statistics to the exact averages over the data under the final weights
        (encoder on the images, decoder on their posterior means): the moving averages of a short training lag
        behind the weights, and decoding runs in eval mode."""
        norms = [m for m in self.modules() if isinstance(m, nn.BatchNorm2d)]
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average
        for chunk in images.split(self.batch_size):
            self._decode_logits(self._posterior(as_unit_float(chunk))[0])
        for norm in norms:
            norm.momentum = 0.1
