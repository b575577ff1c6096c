"""Regression task families: MAML's sinusoids and MetaMix's noisy linear toy problem (App. A.3)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from metabench import ConfigError, Param, TaskBatch, parameters
from metabench.interfaces import SplitName


def _uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator) -> Tensor:
    return torch.rand(shape, generator=generator, device=generator.device).mul_(high - low).add_(low)


def _check_range(name: str, low: float, high: float, where: str) -> None:
    if low > high:
        raise ConfigError(f"{where}: {name}_low = {low} exceeds {name}_high = {high}; need low <= high")


def _split(x: Tensor, y: Tensor, n_support: int, device: torch.device) -> TaskBatch:
    """Points ``[task, support then query, 1]`` on ``device``, the first ``n_support`` of each task its support."""
    x, y = x.to(device), y.to(device)
    return TaskBatch(x[:, :n_support], y[:, :n_support], x[:, n_support:], y[:, n_support:], None)


@dataclass(frozen=True)
class SinusoidFamily:
    """Tasks ``y = A sin(x - phase)`` with ``A``, ``phase`` drawn per task and ``x`` per point, all uniform."""

    amplitude: tuple[float, float]
    phase: tuple[float, float]
    x_range: tuple[float, float]
    x_dim: int = 1
    y_dim: int = 1

    def sample(
        self, n_tasks: int, n_support: int, n_query: int, generator: torch.Generator, device: torch.device
    ) -> TaskBatch:
        amplitude = _uniform((n_tasks, 1, 1), *self.amplitude, generator)
        phase = _uniform((n_tasks, 1, 1), *self.phase, generator)
        x = _uniform((n_tasks, n_support + n_query, 1), *self.x_range, generator)
        return _split(x, amplitude * torch.sin(x - phase), n_support, device)


@dataclass(frozen=True)
class NoisyLinearFamily:
    """Tasks whose support points lie on ``y = support_slope x + eps`` and query points on ``query_slope x + eps``
    (``eps ~ N(0, noise^2)``, set per side), ``x`` uniform."""

    support_slope: float
    query_slope: float
    support_noise: float
    query_noise: float
    x_range: tuple[float, float]
    x_dim: int = 1
    y_dim: int = 1

    def sample(
        self, n_tasks: int, n_support: int, n_query: int, generator: torch.Generator, device: torch.device
    ) -> TaskBatch:
        x = _uniform((n_tasks, n_support + n_query, 1), *self.x_range, generator)
        noise = torch.randn(x.shape, generator=generator, device=generator.device)
        slope = torch.full_like(x, self.query_slope)
        slope[:, :n_support] = self.support_slope
        scale = torch.full_like(x, self.query_noise)
        scale[:, :n_support] = self.support_noise
        return _split(x, slope * x + scale * noise, n_support, device)


@dataclass(frozen=True)
class RegressionDataset:
    """A regression dataset: a task family per split (a continuous family has no classes to keep disjoint)."""

    name: str
    families: dict[str, SinusoidFamily | NoisyLinearFamily]
    task_type: Literal["regression"] = "regression"
    input_shape: tuple[int, ...] = (1,)

    def split(self, name: SplitName) -> SinusoidFamily | NoisyLinearFamily:
        if name not in self.families:
            raise ConfigError(f"dataset '{self.name}': no split '{name}'; splits: {', '.join(self.families)}")
        return self.families[name]

    def evaluation_tasks(self, split: SplitName) -> TaskBatch | None:
        return None


@parameters(
    Param("amplitude_low", float, 0.1, "smallest amplitude A"),
    Param("amplitude_high", float, 5.0, "largest amplitude A"),
    Param("phase_low", float, 0.0, "smallest phase"),
    Param("phase_high", float, math.pi, "largest phase"),
    Param("x_low", float, -5.0, "smallest input x"),
    Param("x_high", float, 5.0, "largest input x"),
)
def sinusoid(
    *, amplitude_low: float, amplitude_high: float, phase_low: float, phase_high: float, x_low: float, x_high: float
) -> RegressionDataset:
    """MAML's sinusoid regression (Finn et al. 2017): ``y = A sin(x - phase)``, ``A ~ U[0.1, 5]``,
    ``phase ~ U[0, pi]``, ``x ~ U[-5, 5]`` by default. Every split is the same family: each draw gives new tasks."""
    where = "dataset 'sinusoid'"
    _check_range("amplitude", amplitude_low, amplitude_high, where)
    _check_range("phase", phase_low, phase_high, where)
    _check_range("x", x_low, x_high, where)
    family = SinusoidFamily((amplitude_low, amplitude_high), (phase_low, phase_high), (x_low, x_high))
    return RegressionDataset("sinusoid", {"train": family, "val": family, "test": family})


@parameters(
    Param("true_slope", float, 5.0, "slope of the ground truth; val/test query targets lie on it, noiseless"),
    Param("support_slope", float, 5.3, "slope of the support points (every split)"),
    Param("query_slope", float, 4.7, "slope of the meta-training query points"),
    Param("noise", float, 0.1, "standard deviation of the noise eps on support and training query points", low=0.0),
    Param("x_low", float, -5.0, "smallest input x"),
    Param("x_high", float, 5.0, "largest input x"),
)
def noisy_linear(
    *, true_slope: float, support_slope: float, query_slope: float, noise: float, x_low: float, x_high: float
) -> RegressionDataset:
    """MetaMix's toy least-squares problem (Yao et al., App. A.3): the truth is ``y = 5x``; meta-training tasks
    have support points on ``y = 5.3x + eps`` and query points on ``y = 4.7x + eps``, ``eps ~ N(0, 0.1^2)``.

    The ``val`` and ``test`` splits keep the shifted noisy support (``support_slope``) but their query targets lie
    exactly on the truth ``y = true_slope x`` (no noise): their query error measures how close an adapted model
    comes to the ground truth rather than to the biased query line. ``x ~ U[x_low, x_high]``.
    """
    _check_range("x", x_low, x_high, "dataset 'noisy-linear'")
    x_range = (x_low, x_high)
    train = NoisyLinearFamily(support_slope, query_slope, noise, noise, x_range)
    held_out = NoisyLinearFamily(support_slope, true_slope, noise, 0.0, x_range)
    return RegressionDataset("noisy-linear", {"train": train, "val": held_out, "test": held_out})
