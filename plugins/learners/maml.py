"""MAML (Finn et al., 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks")."""

from __future__ import annotations

from typing import Any

from metabench import parameters
from metabench.plugins.learners.gradient import MAML_PARAMS, GradientLearner


@parameters(*MAML_PARAMS)
def maml(**options: Any) -> GradientLearner:
    """MAML (Finn et al., 2017): second-order meta-gradient through the inner loop unless ``first_order``."""
    return GradientLearner(**options)
