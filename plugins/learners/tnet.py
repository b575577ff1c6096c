"""T-Net (Lee & Choi, 2018, "Gradient-Based Meta-Learning with Learned Layerwise Metric and Subspace")."""

from __future__ import annotations

from typing import Any

from metabench import parameters
from metabench.plugins.learners.gradient import MAML_PARAMS, GradientLearner
from metabench.plugins.learners.transform import TRANSFORM_AT


@parameters(*MAML_PARAMS, TRANSFORM_AT)
def tnet(**options: Any) -> GradientLearner:
    """T-Net (Lee & Choi, 2018): identity-initialised channel-mixing matrices (after each convolution and the output
    layer, or after each block: ``transform_at``), meta-learned and kept fixed in the inner loop, which adapts the
    backbone's weights."""
    return GradientLearner(**options)
