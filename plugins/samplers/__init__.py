"""Built-in task samplers: episodic (``standard``, ``nme``) and unsupervised LASIUM (``lasium-n/-ro/-oc``)."""

from __future__ import annotations

from metabench import Register, hookimpl
from metabench.plugins.samplers.episodic import NonMutuallyExclusiveSampler, StandardSampler
from metabench.plugins.samplers.lasium import lasium_n, lasium_oc, lasium_ro


@hookimpl
def metabench_register_samplers(register: Register) -> None:
    register(
        "standard",
        StandardSampler,
        summary="Mutually exclusive N-way K-shot tasks, Q queries per class, labels permuted per task",
    )
    register(
        "nme",
        NonMutuallyExclusiveSampler,
        summary="Non-mutually-exclusive tasks (MetaMix App. C.3): each meta-train class keeps one label in every task",
    )
    register("lasium-n", lasium_n, summary="LASIUM-N: unsupervised tasks from a generative model, anchor + noise.")
    register("lasium-ro", lasium_ro, summary="LASIUM-RO: unsupervised tasks, interpolating toward random latents.")
    register("lasium-oc", lasium_oc, summary="LASIUM-OC: unsupervised tasks, interpolating toward the other anchors.")
