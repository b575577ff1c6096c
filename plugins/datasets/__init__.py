"""Built-in datasets: Omniglot (embedded, full from a path, Lake's 20 runs), image folders, regression families."""

from __future__ import annotations

from metabench import Register, hookimpl
from metabench.plugins.datasets import image_folder, omniglot, regression


@hookimpl
def metabench_register_datasets(register: Register) -> None:
    register(
        "omniglot",
        omniglot.omniglot,
        summary="Omniglot characters, 28x28 (embedded 242-character background subsets, or the full set from root)",
    )
    register(
        "omniglot-lake20",
        omniglot.omniglot_lake20,
        summary="Omniglot background characters for meta-training; meta-test = Lake's 20 official 20-way 1-shot runs",
    )
    register(
        "image-folder",
        image_folder.image_folder,
        summary="Your own images from root/<class>/<image> or root/<group>/<class>/<image> (ragged classes allowed)",
    )
    register(
        "sinusoid",
        regression.sinusoid,
        summary="MAML sinusoid regression: y = A sin(x - phase), A ~ U[0.1, 5], phase ~ U[0, pi], x ~ U[-5, 5]",
    )
    register(
        "noisy-linear",
        regression.noisy_linear,
        summary="MetaMix toy regression (App. A.3): truth y = 5x, support y = 5.3x + eps, query y = 4.7x + eps",
    )
