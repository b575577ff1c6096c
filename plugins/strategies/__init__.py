"""Built-in outer-loop data strategies, one per module; registered through the entry-point group ``metabench``."""

from __future__ import annotations

from metabench import Register, hookimpl
from metabench.plugins.strategies.concatenation import ConcatenationStrategy
from metabench.plugins.strategies.metamix import MetaMixStrategy
from metabench.plugins.strategies.metamixup import MetaMixUpStrategy
from metabench.plugins.strategies.multimix import MultiMixStrategy
from metabench.plugins.strategies.multiple_interpolations import MultipleInterpolationsStrategy
from metabench.plugins.strategies.query import QueryStrategy
from metabench.plugins.strategies.self_mixup import mixup_query, mixup_support


@hookimpl
def metabench_register_strategies(register: Register) -> None:
    """Dq, Dcob, Mixup(Ds,Ds), Mixup(Dq,Dq) and MetaMix (MetaMix paper); MultiMix, multi-mix and MetaMixUp."""
    register("query", QueryStrategy, summary="Dq: outer loss on the query set (the plain algorithm)")
    register("cob", ConcatenationStrategy, summary="Dcob: outer loss on the support and query sets concatenated")
    register("mixup-ss", mixup_support, summary="Mixup(Ds,Ds): support mixed with a permutation of itself")
    register("mixup-qq", mixup_query, summary="Mixup(Dq,Dq): query mixed with a permutation of itself")
    register("metamix", MetaMixStrategy, summary="MetaMix: support and query mixed at a hidden layer, λ ~ Beta(α, β)")
    register(
        "multi-mix",
        MultipleInterpolationsStrategy,
        summary="multi-mix: K ordered MetaMix interpolations λ_1 < … < λ_K per support-query pair",
    )
    register(
        "multimix", MultiMixStrategy, summary="MultiMix: Dirichlet convex combinations of a whole task's embeddings"
    )
    register("metamixup", MetaMixUpStrategy, summary="MetaMixUp: MetaMix whose λ takes a step on the held-out loss")
