"""Built-in learners, one per module; registered through the entry-point group ``metabench`` like any plugin."""

from __future__ import annotations

from metabench import Register, hookimpl
from metabench.plugins.learners import anil, fomaml, maml, metasgd, protonet, reptile, scratch, tnet


@hookimpl
def metabench_register_learners(register: Register) -> None:
    """MAML family on one functional inner loop, ProtoNets, Reptile and the train-from-scratch baseline."""
    register("maml", maml.maml, summary="MAML: meta-learned initialisation, second-order meta-gradient.")
    register(
        "fomaml", fomaml.fomaml, summary="First-order MAML: meta-gradient = query gradient at the adapted weights."
    )
    register("anil", anil.anil, summary="ANIL: MAML whose inner loop adapts only the head.")
    register("metasgd", metasgd.metasgd, summary="Meta-SGD: MAML with meta-learned per-element inner learning rates.")
    register(
        "tnet", tnet.tnet, summary="T-Net: MAML with a meta-learned linear channel transform, fixed in the inner loop."
    )
    register(
        "protonet", protonet.ProtoNet, summary="Prototypical Networks: distance to support prototypes; no inner loop."
    )
    register(
        "reptile", reptile.Reptile, summary="Reptile: moves the initialisation toward the support-adapted weights."
    )
    register(
        "scratch",
        scratch.Scratch,
        summary="No meta-training: a fresh model trained on each support set (LASIUM's baseline).",
    )
