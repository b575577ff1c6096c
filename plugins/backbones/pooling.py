"""2x2 max-pooling (stride 2) that stays fast under ``torch.compile`` on the CPU.

Eager runs take PyTorch's own kernel (``F.max_pool2d``). Under ``torch.compile`` that kernel is decomposed and
Inductor generates its own, and on the CPU its backward is a scatter that visits one element at a time: a quarter of
a compiled first-order MAML step at paper scale (benchmarks/README.md). So the compiled form calls PyTorch's forward
and backward kernels as custom operators, opaque to Inductor, on channels-last tensors. The numbers are those of
``F.max_pool2d``: the same kernels, each window's gradient to the first of its maxima. Custom operators do not run
under ``torch.func`` transforms, so there (an inner loop's ``torch.func.grad`` on a few support examples) Inductor's
own pooling stays.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabench.plugins.backbones.layers import under_function_transform

_WINDOW = [2, 2]
# Inductor passes these operators tensors with the strides they were traced with (the channels-last layout their
# callers give them), instead of copying them to a layout of its choice.
_EXACT_STRIDES = (torch._C.Tag.needs_exact_strides,)


@torch.library.custom_op("metabench::max_pool_2x2", mutates_args=(), tags=_EXACT_STRIDES)
def _pool(h: Tensor) -> tuple[Tensor, Tensor]:
    return torch.ops.aten.max_pool2d_with_indices(h, _WINDOW, _WINDOW)


@_pool.register_fake
def _pool_shapes(h: Tensor) -> tuple[Tensor, Tensor]:
    return torch.ops.aten.max_pool2d_with_indices(h, _WINDOW, _WINDOW)


@torch.library.custom_op("metabench::max_pool_2x2_backward", mutates_args=(), tags=_EXACT_STRIDES)
def _unpool(grad: Tensor, h: Tensor, indices: Tensor) -> Tensor:
    return torch.ops.aten.max_pool2d_with_indices_backward(grad, h, _WINDOW, _WINDOW, [0, 0], [1, 1], False, indices)


@_unpool.register_fake
def _unpool_shapes(grad: Tensor, h: Tensor, indices: Tensor) -> Tensor:
    return torch.ops.aten.max_pool2d_with_indices_backward(grad, h, _WINDOW, _WINDOW, [0, 0], [1, 1], False, indices)


def _save_for_unpool(ctx: Any, inputs: tuple[Tensor], output: tuple[Tensor, Tensor]) -> None:
    ctx.save_for_backward(inputs[0], output[1])
    ctx.mark_non_differentiable(output[1])


def _pool_backward(ctx: Any, grad: Tensor, _: Tensor) -> Tensor:
    h, indices = ctx.saved_tensors
    return _unpool(grad, h, indices)


_pool.register_autograd(_pool_backward, setup_context=_save_for_unpool)


def max_pool_2x2(h: Tensor) -> Tensor:
    """``F.max_pool2d(h, 2)`` for images ``h [B, C, H, W]``; under ``torch.compile`` and outside ``torch.func``
    transforms through the custom operators (see the module)."""
    if not torch.compiler.is_compiling() or under_function_transform():
        return F.max_pool2d(h, 2)
    return _pool(h.contiguous(memory_format=torch.channels_last))[0]


class MaxPool2x2(nn.Module):
    def forward(self, h: Tensor) -> Tensor:
        return max_pool_2x2(h)
