"""A run's behavioural probe: digests of its parameters after each of its first meta-steps and of its scores on a
few fixed evaluation tasks at the last of them, so that a replay under other code can show it computes the same.

Digests are sha256 of the exact bytes (dtype, shape and values of every tensor, by name): two digests are equal
only when the numbers are bit-identical. The probe reads the run's state and draws from no generator of the run:
the scores come from copies of the parameters, under a forked global random state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

STEPS = 10  # meta-steps the probe follows (fewer when the run has fewer)
TASKS = 4  # meta-validation tasks scored at the probe's last step


def digest(tensors: Mapping[str, Tensor]) -> str:
    """sha256 of the names, dtypes, shapes and bytes of ``tensors``, in name order."""
    hasher = hashlib.sha256()
    for name in sorted(tensors):
        data = tensors[name].detach().cpu().contiguous()
        hasher.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        hasher.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return hasher.hexdigest()


def steps_of(meta_steps: int) -> int:
    return min(STEPS, meta_steps)


def observe(
    probe: dict[str, Any],
    step: int,
    params: Mapping[str, Tensor],
    score: Callable[[dict[str, Tensor]], Mapping[str, Tensor]],
) -> None:
    """Add step ``step``'s parameter digest to ``probe`` (``{"steps": K, "params": [...]}``); at step K, also the
    digest of ``score`` on a copy of the parameters."""
    if step > probe["steps"] or len(probe["params"]) != step - 1:
        return  # past the probe, or a run resumed inside it: its earlier steps are not known here
    probe["params"].append(digest(params))
    if step == probe["steps"]:
        copies = {name: p.detach().clone().requires_grad_(p.requires_grad) for name, p in params.items()}
        devices = sorted({p.device.index or 0 for p in params.values() if p.device.type == "cuda"})
        with torch.random.fork_rng(devices=devices):
            probe["scores"] = digest(score(copies))


def complete(probe: dict[str, Any] | None) -> bool:
    return bool(probe) and len(probe["params"]) == probe["steps"] and "scores" in probe
