"""Named random streams: every random number metabench draws comes from a generator seeded by a stream's name."""

from __future__ import annotations

from typing import Any

import torch

from metabench.cache import stable_hash


def derive_seed(*parts: Any) -> int:
    """A seed for a named stream (e.g. ``(run_seed, "tasks")``), stable across processes and machines."""
    return int(stable_hash(list(parts)), 16) % 2**63


def make_generator(*parts: Any, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded by :func:`derive_seed` of ``parts``."""
    return torch.Generator(device=device).manual_seed(derive_seed(*parts))
