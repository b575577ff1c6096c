"""Built-in outer-loop data strategies: registered through the entry-point group ``metabench``."""

from __future__ import annotations

from metabench import hookimpl
from metabench.plugins.strategies.basic import ConcatenationStrategy, QueryStrategy, mixup_query, mixup_support
from metabench.plugins.strategies.metamix import MetaMixStrategy
from metabench.plugins.strategies.metamixup import MetaMixUpStrategy
from metabench.plugins.strategies.mixing import BETA_PARAMS, LAYERS_PARAM
from metabench.plugins.strategies.multi_mix import MultiMixPairsStrategy
from metabench.plugins.strategies.multimix import MultiMixStrategy
from metabench.registry import Param, Register

MIXUP_PARAMS = (LAYERS_PARAM, *BETA_PARAMS)


@hookimpl
def metabench_register_strategies(register: Register) -> None:
    """Dq, Dcob, Mixup(Ds,Ds), Mixup(Dq,Dq) and MetaMix (MetaMix paper); MultiMix, multi-mix and MetaMixUp."""
    register("query", QueryStrategy, summary="Dq: outer loss on the query set (the plain algorithm)")
    register("cob", ConcatenationStrategy, summary="Dcob: outer loss on the support and query sets concatenated")
    register(
        "mixup-ss",
        mixup_support,
        summary="Mixup(Ds,Ds): support mixed with a permutation of itself at a hidden layer",
        params=MIXUP_PARAMS,
    )
    register(
        "mixup-qq",
        mixup_query,
        summary="Mixup(Dq,Dq): query mixed with a permutation of itself at a hidden layer",
        params=MIXUP_PARAMS,
    )
    register(
        "metamix",
        MetaMixStrategy,
        summary="MetaMix: support and query mixed at a hidden layer, λ ~ Beta(α, β)",
        params=MIXUP_PARAMS,
    )
    register(
        "multi-mix",
        MultiMixPairsStrategy,
        summary="multi-mix: K ordered MetaMix interpolations λ_1 < … < λ_K per support-query pair",
        params=[*MIXUP_PARAMS, Param("k", int, 5, "interpolations per support-query pair (the paper uses 5)", low=1)],
    )
    register(
        "multimix",
        MultiMixStrategy,
        summary="MultiMix: n Dirichlet convex combinations of all support and query embeddings of a task",
        params=[
            LAYERS_PARAM,
            Param("n", int, None, "mixed samples per task; none = 4 x (support + query size)", low=1, nullable=True),
            Param(
                "alpha_low",
                float,
                0.5,
                "lower end of U[alpha_low, alpha_high], the Dirichlet concentration's "
                "distribution (one draw per mixed sample)",
                low=1e-3,
            ),
            Param("alpha_high", float, 2.0, "upper end of the Dirichlet concentration's range", low=1e-3),
        ],
    )
    register(
        "metamixup",
        MetaMixUpStrategy,
        summary="MetaMixUp: MetaMix with per-pair λ refined by a gradient step on the held-out loss",
        params=[
            *MIXUP_PARAMS,
            Param(
                "lambda_lr",
                float,
                1.0,
                "step size of the gradient step on λ, then clipped to [0, 1] (the paper's 5.0 steps a pre-sigmoid "
                "value, at most 1/4 as steep: about 1.25 on λ itself)",
                low=0.0,
            ),
        ],
    )
