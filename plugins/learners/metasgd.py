"""Meta-SGD (Li et al., 2017, "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning")."""

from __future__ import annotations

from typing import Any

from metabench import parameters
from metabench.plugins.learners.gradient import MAML_PARAMS, GradientLearner


@parameters(*MAML_PARAMS)
def metasgd(**options: Any) -> GradientLearner:
    """Meta-SGD (Li et al., 2017): per-element inner learning rates, initialised to ``inner_lr``, meta-learned."""
    return GradientLearner(**options, learned_lrs=True)
