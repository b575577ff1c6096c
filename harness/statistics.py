"""One run's summary of its evaluation tasks: mean, standard deviation and the 95% CI over those tasks.

The runner stores this in every record (``metrics.test``) and uses it for validation. It describes one training run on
its fixed tasks only; everything that compares runs or cells -- CIs over training seeds, Δs, verdicts -- lives in
:mod:`metabench.inference`. Plain numpy: nothing here needs torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

Z_95 = 1.96


def summarize(scores: Sequence[float] | np.ndarray | Any) -> dict[str, float]:
    """Mean, sample standard deviation and the normal-approximation 95% CI half-width ``1.96·std/√n`` over one
    run's tasks (hundreds of them: z and t agree).

    ``scores`` may be a CPU tensor: anything ``np.asarray`` reads."""
    values = np.asarray(scores.cpu() if hasattr(scores, "cpu") else scores, dtype=np.float64)
    n = values.size
    std = float(values.std(ddof=1)) if n > 1 else 0.0
    return {"mean": float(values.mean()), "std": std, "ci95": Z_95 * std / math.sqrt(n), "n": n}
