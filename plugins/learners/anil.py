"""ANIL (Raghu et al., 2020, "Rapid Learning or Feature Reuse?")."""

from __future__ import annotations

from typing import Any

from metabench import parameters
from metabench.plugins.learners.gradient import MAML_PARAMS, GradientLearner


@parameters(*MAML_PARAMS)
def anil(**options: Any) -> GradientLearner:
    """ANIL (Raghu et al., 2020): the inner loop adapts only the head; the body is meta-learned only."""
    return GradientLearner(**options, head_only=True)
