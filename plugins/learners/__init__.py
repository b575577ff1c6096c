"""Built-in learners: registered through the entry-point group ``metabench``."""

from __future__ import annotations

from metabench import hookimpl
from metabench.plugins.learners.functional import VECTORIZE_CHOICES
from metabench.plugins.learners.maml import anil, fomaml, maml, metasgd, tnet
from metabench.plugins.learners.protonet import ProtoNet
from metabench.plugins.learners.reptile import Reptile, Scratch
from metabench.registry import Param, Register

VECTORIZE = Param(
    "vectorize",
    str,
    "auto",
    "one torch.func.vmap over the meta-batch, or a per-task loop (same numbers); auto: loop for conv backbones on "
    "CPU (measured faster there), else vmap",
    choices=VECTORIZE_CHOICES,
)


def _inner(steps: int, lr: float) -> list[Param]:
    return [
        Param("inner_steps", int, steps, "gradient steps on the support set during meta-training", low=1),
        Param("inner_lr", float, lr, "inner-loop step size", low=0.0),
        Param(
            "eval_inner_steps",
            int,
            None,
            "steps at evaluation (first-order; none = inner_steps)",
            low=0,
            nullable=True,
        ),
    ]


FIRST_ORDER = Param("first_order", bool, False, "drop second derivatives of the inner loop from the meta-gradient")


@hookimpl
def metabench_register_learners(register: Register) -> None:
    """MAML family on one functional inner loop, ProtoNets, Reptile and the train-from-scratch baseline."""
    gradient = [*_inner(1, 0.4), FIRST_ORDER, VECTORIZE]
    register("maml", maml, summary="MAML: meta-learned initialisation, second-order meta-gradient.", params=gradient)
    register(
        "fomaml",
        fomaml,
        summary="First-order MAML: meta-gradient = query gradient at the adapted weights.",
        params=[*_inner(1, 0.4), VECTORIZE],
    )
    register("anil", anil, summary="ANIL: MAML whose inner loop adapts only the head.", params=gradient)
    register(
        "metasgd",
        metasgd,
        summary="Meta-SGD: MAML with meta-learned per-parameter inner learning rates (initialised to inner_lr).",
        params=gradient,
    )
    register(
        "tnet",
        tnet,
        summary="T-Net: MAML with a meta-learned linear channel transform after each block, fixed in the inner loop.",
        params=gradient,
    )
    register(
        "protonet",
        ProtoNet,
        summary="Prototypical Networks: squared Euclidean distance to support prototypes; no inner loop.",
        params=[
            Param(
                "lookahead_lr",
                float,
                0.1,
                "step size of the one-step lookahead that learned-λ strategies (metamixup) score their plan with",
                low=0.0,
            ),
            VECTORIZE,
        ],
    )
    register(
        "reptile",
        Reptile,
        summary="Reptile: first-order steps on the support set; moves the initialisation toward the adapted weights.",
        params=[*_inner(5, 0.1), VECTORIZE],
    )
    register(
        "scratch",
        Scratch,
        summary="Baseline without meta-training: trains a fresh model on each support set only (LASIUM's baseline).",
        params=[
            Param("steps", int, 100, "SGD steps on the support set of each evaluation task", low=0),
            Param("lr", float, 0.01, "SGD step size", low=0.0),
            VECTORIZE,
        ],
    )
