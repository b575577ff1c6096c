"""Built-in datasets: Omniglot (embedded, full from a path, Lake's 20 runs), image folders, regression families."""

from __future__ import annotations

import math

from metabench import hookimpl
from metabench.plugins.datasets import image_folder, omniglot, regression
from metabench.registry import Param, Register


def _fraction(name: str, default: float, what: str) -> Param:
    return Param(name, float, default, f"share of {what} in the meta-{name.split('_')[0]} split", low=0.0, high=1.0)


def _omniglot_common() -> list[Param]:
    return [
        Param("image_size", int, 28, "side of the square images after resizing (MAML/MetaMix: 28)", low=4, high=105),
        Param("rotations", bool, False, "add each character rotated by 90/180/270 degrees as 3 new classes"),
        Param(
            "split_by",
            str,
            "character",
            "assign single characters or whole alphabets to splits",
            choices=("character", "alphabet"),
        ),
    ]


_SEED = Param("seed", int, 0, "seed of the random class split")


@hookimpl
def metabench_register_datasets(register: Register) -> None:
    register(
        "omniglot",
        omniglot.omniglot,
        summary="Omniglot characters, 28x28 (embedded 242-character background subsets, or the full set from root)",
        params=[
            *_omniglot_common(),
            _fraction("train_fraction", 0.6, "characters (or alphabets)"),
            _fraction("val_fraction", 0.2, "characters (or alphabets)"),
            _SEED,
            Param(
                "root",
                str,
                None,
                "folder of the full Omniglot (images_background/images_evaluation, folders or "
                "zips); none: the embedded subsets",
                nullable=True,
            ),
        ],
    )
    register(
        "omniglot-lake20",
        omniglot.omniglot_lake20,
        summary="Omniglot background characters for meta-training; meta-test = Lake's 20 official 20-way 1-shot runs",
        params=[
            *_omniglot_common(),
            _fraction("val_fraction", 0.2, "background characters (or alphabets)"),
            _SEED,
            Param(
                "root",
                str,
                None,
                "folder holding the full images_background (folder or zip); none: the embedded subsets",
                nullable=True,
            ),
        ],
    )
    register(
        "image-folder",
        image_folder.image_folder,
        summary="Your own images from root/<class>/<image> or root/<group>/<class>/<image> (ragged classes allowed)",
        params=[
            Param("root", str, None, "the image folder (required)", nullable=True),
            Param("image_size", int, 84, "side of the square images after resizing", low=4, high=1024),
            Param("channels", int, 3, "1: grayscale, 3: RGB", choices=(1, 3)),
            Param(
                "split_by",
                str,
                "auto",
                "named: groups train/val/test are the splits; class/group: random split "
                "by fractions; auto: named when possible, else class",
                choices=("auto", "named", "class", "group"),
            ),
            _fraction("train_fraction", 0.6, "classes (or groups)"),
            _fraction("val_fraction", 0.2, "classes (or groups)"),
            _SEED,
        ],
    )
    register(
        "sinusoid",
        regression.sinusoid,
        summary="MAML sinusoid regression: y = A sin(x - phase), A ~ U[0.1, 5], phase ~ U[0, pi], x ~ U[-5, 5]",
        params=[
            Param("amplitude_low", float, 0.1, "smallest amplitude A"),
            Param("amplitude_high", float, 5.0, "largest amplitude A"),
            Param("phase_low", float, 0.0, "smallest phase"),
            Param("phase_high", float, math.pi, "largest phase"),
            Param("x_low", float, -5.0, "smallest input x"),
            Param("x_high", float, 5.0, "largest input x"),
        ],
    )
    register(
        "noisy-linear",
        regression.noisy_linear,
        summary="MetaMix toy regression (App. A.3): truth y = 5x, support y = 5.3x + eps, query y = 4.7x + eps",
        params=[
            Param("true_slope", float, 5.0, "slope of the ground truth; val/test query targets lie on it, noiseless"),
            Param("support_slope", float, 5.3, "slope of the support points (every split)"),
            Param("query_slope", float, 4.7, "slope of the meta-training query points"),
            Param(
                "noise", float, 0.1, "standard deviation of the noise eps on support and training query points", low=0.0
            ),
            Param("x_low", float, -5.0, "smallest input x"),
            Param("x_high", float, 5.0, "largest input x"),
        ],
    )
