"""T-Net (Lee & Choi, 2018, "Gradient-Based Meta-Learning with Learned Layerwise Metric and Subspace")."""

from __future__ import annotations

from typing import Any

from metabench import parameters
from metabench.plugins.learners.gradient import MAML_PARAMS, GradientLearner


@parameters(*MAML_PARAMS)
def tnet(**options: Any) -> GradientLearner:
    """T-Net (Lee & Choi, 2018): an identity-initialised channel-mixing matrix after every block, meta-learned and
    kept fixed in the inner loop, which adapts the backbone's weights."""
    return GradientLearner(**options, transforms=True)
