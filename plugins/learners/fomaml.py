"""First-order MAML (Finn et al., 2017, Sec. 5.2)."""

from __future__ import annotations

from typing import Any

from metabench import parameters
from metabench.plugins.learners.execution import VECTORIZE
from metabench.plugins.learners.gradient import GradientLearner, inner_loop_params


@parameters(*inner_loop_params(1, 0.4), VECTORIZE)
def fomaml(**options: Any) -> GradientLearner:
    """First-order MAML: the meta-gradient is the query-loss gradient at the adapted weights."""
    return GradientLearner(**options, first_order=True)
