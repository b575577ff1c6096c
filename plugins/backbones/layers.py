"""Building blocks shared by the built-in backbones: batch norm from primitives, the layered network, initialisation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters


@torch.compiler.assume_constant_result
def under_vmap() -> bool:
    """Whether the caller runs inside ``torch.func.vmap`` (at any depth of nested function transforms).

    Dynamo cannot trace the interpreter stack (a graph break in every compiled meta-gradient, issue 25): under
    ``torch.compile`` the answer is taken once, while tracing, and baked into the graph. That is right because only
    the per-task loop is compiled (:class:`metabench.plugins.learners.execution.CompiledTasks`), never a vmap."""
    return any(i.key() == torch._C._functorch.TransformType.Vmap for i in retrieve_all_functorch_interpreters())


@torch.compiler.assume_constant_result
def under_function_transform() -> bool:
    """Whether the caller runs inside any ``torch.func`` transform (``grad`` of an inner loop, ``vmap``, ...); taken
    while tracing under ``torch.compile``, as :func:`under_vmap` is."""
    return bool(retrieve_all_functorch_interpreters())


def batch_norm(h: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """Normalise ``h [B, C, ...]`` per channel with the statistics of this batch.

    Under ``vmap``: written from mean/var/rsqrt, because ``vmap`` through ``F.batch_norm`` gives wrong second-order
    meta-gradients (1% off in float64, pytorch/functorch issue 534); these primitives batch correctly. Elsewhere the
    native kernel on channels-first images: its channels-last CPU kernel, 6x faster, sums each channel's N*H*W values
    one after another in float32 and put float32 meta-gradients 1e-2 off (benchmarks/README.md, tests/test_float32.py).
    Under ``torch.compile`` Inductor writes its own kernels for ``F.batch_norm`` (Welford statistics, vectorised over
    the channels), as accurate on channels-last tensors as the channels-first kernel, so the layout stays as it is;
    the mean/var form rounds worse there (4e-5 against 1.1e-5 on tests/test_float32.py's Omniglot tasks).
    """
    if under_vmap():
        return batch_norm_primitives(h, weight, bias, eps)
    if not torch.compiler.is_compiling():
        h = h.contiguous()
    return F.batch_norm(h, None, None, weight, bias, training=True, eps=eps)


def channels_last(h: Tensor) -> Tensor:
    """Images ``h [B, C, H, W]`` with channels-last strides (other tensors as they are).

    With one channel both layouts hold the same bytes and ``contiguous(memory_format=...)`` keeps the channels-first
    strides, which make the convolution after it answer channels-first, 10x slower (benchmarks/README.md); so a
    single channel gets the channels-last strides explicitly.
    """
    if h.dim() != 4:
        return h
    if h.shape[1] != 1:
        return h.contiguous(memory_format=torch.channels_last)
    batch, _, height, width = h.shape
    strides = (height * width, 1, width, 1)
    if h.stride() == strides:
        return h
    return torch.empty_strided(h.shape, strides, dtype=h.dtype, device=h.device).copy_(h)


def batch_norm_primitives(h: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """:func:`batch_norm` from mean/var/rsqrt, which batch correctly under ``vmap`` at every order."""
    dims = [0, *range(2, h.dim())]
    mean = h.mean(dim=dims, keepdim=True)
    var = (h - mean).square().mean(dim=dims, keepdim=True)
    shape = [1, -1] + [1] * (h.dim() - 2)
    # Fold the normalisation into one scale and shift per channel: two full-size operations instead of four.
    scale = torch.rsqrt(var + eps) * weight.view(shape)
    return h * scale + (bias.view(shape) - mean * scale)


class BatchNorm(nn.Module):
    """Batch norm with batch statistics only (no running statistics), as in MAML: train and test behave alike."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, h: Tensor) -> Tensor:
        return batch_norm(h, self.weight, self.bias)


class LayeredNet(nn.Module):
    """A stack of blocks followed by a linear head, split at its mixable layers.

    Layer 0 is the input, layer ``l`` the output of ``blocks[l - 1]``; the last block ends with the flattened
    representation the head reads, so ``n_layers = len(blocks) + 1``.
    """

    head_prefix = "head."

    def __init__(self, input_shape: tuple[int, ...], blocks: list[nn.Module], head: nn.Linear):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        self.n_layers = len(blocks) + 1

    def forward(self, h: Tensor, start: int = 0, stop: int | None = None) -> Tensor:
        last = self.n_layers - 1
        if not under_vmap():
            h = channels_last(h)
        for block in self.blocks[start : last if stop is None else stop]:
            h = block(h)
        return self.head(h) if stop is None else h

    def init_parameters(self, generator: torch.Generator) -> dict[str, Tensor]:
        """Fresh parameters drawn from ``generator``: Xavier-uniform weights, zero biases, unit norm scales."""
        fresh: dict[str, Tensor] = {}
        for prefix, module in self.named_modules():
            name = f"{prefix}." if prefix else ""
            if isinstance(module, nn.Conv2d | nn.Linear):
                fresh[f"{name}weight"] = _xavier_uniform(module.weight, generator)
                if module.bias is not None:
                    fresh[f"{name}bias"] = torch.zeros_like(module.bias)
            elif isinstance(module, BatchNorm):
                fresh[f"{name}weight"] = torch.ones_like(module.weight)
                fresh[f"{name}bias"] = torch.zeros_like(module.bias)
        missing = {n for n, _ in self.named_parameters()} - fresh.keys()
        assert not missing, f"no initialisation rule for {sorted(missing)}"
        return fresh


def _xavier_uniform(weight: Tensor, generator: torch.Generator) -> Tensor:
    receptive = math.prod(weight.shape[2:])
    fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    draw = torch.rand(weight.shape, generator=generator, device=generator.device, dtype=weight.dtype)
    return ((2 * draw - 1) * bound).to(weight.device)


def flat_size(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Features per example that ``module`` outputs for inputs of ``input_shape`` (two examples: batch norm needs
    more than one)."""
    with torch.no_grad():
        return module(torch.zeros(2, *input_shape)).flatten(1).shape[1]
