"""The losses and scores of one task's predictions: soft cross-entropy and accuracy (classification), MSE
(regression)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from metabench import TaskBatch

Loss = Callable[[Tensor, Tensor], Tensor]
"""``loss(prediction, targets)``: one task's scalar loss; targets are soft (one-hot or mixed) or regression values."""


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy against soft (e.g. mixed one-hot) targets, averaged over the batch."""
    return -(targets * logits.log_softmax(-1)).sum(-1).mean()


def mse(prediction: Tensor, targets: Tensor) -> Tensor:
    return (prediction - targets).square().mean()


def task_loss(tasks: TaskBatch) -> Loss:
    """The training loss of ``tasks``: soft cross-entropy (classification) or MSE (regression)."""
    return soft_cross_entropy if tasks.is_classification else mse


def task_score(tasks: TaskBatch) -> Loss:
    """Accuracy (classification; targets one-hot) or MSE (regression) of one task's predictions."""
    if tasks.is_classification:
        return lambda logits, targets: (logits.argmax(-1) == targets.argmax(-1)).to(logits.dtype).mean()
    return mse
