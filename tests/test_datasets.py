"""Datasets: the embedded Omniglot, a full Omniglot from a path, Lake's 20 runs, image folders, regression families."""

from __future__ import annotations

import math
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metabench.errors import ConfigError
from metabench.plugins.datasets import omniglot as omniglot_module
from metabench.registry import default_registry

SPLITS = ("train", "val", "test")


def build(name: str, **params):
    return default_registry().build("dataset", name, params)


@pytest.fixture(scope="module")
def omniglot():
    return build("omniglot")


@pytest.fixture(scope="module")
def lake():
    return build("omniglot-lake20")


@pytest.fixture
def private_cache(tmp_path_factory, monkeypatch):
    """Trees made by a test are decoded into a throwaway cache, not the user's."""
    monkeypatch.setenv("METABENCH_CACHE", str(tmp_path_factory.mktemp("cache")))


def test_the_datasets_are_registered():
    names = set(default_registry().names("dataset"))
    assert {"omniglot", "omniglot-lake20", "image-folder", "sinusoid", "noisy-linear"} <= names


# ----------------------------------------------------------------------------------------------------------- omniglot
def test_embedded_omniglot_has_242_distinct_characters_of_20_drawers_in_disjoint_splits(omniglot):
    names = [name for split in SPLITS for name in omniglot.split(split).class_names]
    assert len(names) == len(set(names)) == 242, "Greek and Latin must be counted once"
    assert len({name.split("/")[0] for name in names}) == 8
    for split in SPLITS:
        images = omniglot.split(split).images
        assert images.dtype == torch.uint8 and images.shape[1:] == (20, 1, 28, 28)
        assert omniglot.split(split).counts is None
    assert omniglot.input_shape == (1, 28, 28) and omniglot.task_type == "classification"
    assert omniglot.evaluation_tasks("test") is None


def test_omniglot_strokes_are_bright_on_a_dark_background(omniglot):
    images = omniglot.split("train").images.float()
    assert images.max() == 255
    assert images.median() == 0, "most pixels are background"
    assert images.mean() < 50


def test_omniglot_split_is_deterministic_in_its_seed(omniglot):
    again, other = build("omniglot", seed=0), build("omniglot", seed=1)
    assert again.split("val").class_names == omniglot.split("val").class_names
    assert torch.equal(again.split("val").images, omniglot.split("val").images)
    assert other.split("val").class_names != omniglot.split("val").class_names


def test_omniglot_split_by_alphabet_keeps_alphabets_whole():
    dataset = build("omniglot", split_by="alphabet", train_fraction=0.5, val_fraction=0.25)
    alphabets = [{name.split("/")[0] for name in dataset.split(s).class_names} for s in SPLITS]
    assert [len(a) for a in alphabets] == [4, 2, 2]
    assert not (alphabets[0] & alphabets[1] or alphabets[0] & alphabets[2] or alphabets[1] & alphabets[2])


def test_omniglot_rotations_add_three_rotated_classes_per_character(omniglot):
    rotated = build("omniglot", rotations=True)
    plain, turned = omniglot.split("test"), rotated.split("test")
    assert turned.n_classes == 4 * plain.n_classes
    name = plain.class_names[0]
    at = turned.class_names.index(f"{name}@rot180")
    assert torch.equal(turned.images[at], torch.rot90(plain.images[0], 2, dims=(-2, -1)))
    characters = {n.split("@")[0] for s in SPLITS for n in rotated.split(s).class_names}
    assert len(characters) == 242
    for split in ("train", "val"):
        assert not {n.split("@")[0] for n in rotated.split(split).class_names} & set(plain.class_names)


def test_omniglot_image_size_is_a_parameter():
    assert build("omniglot", image_size=14).split("val").images.shape[1:] == (20, 1, 14, 14)


def test_omniglot_fractions_that_leave_a_split_empty_are_an_error():
    with pytest.raises(ConfigError, match=r"val_fraction = 0.0 split the 242 characters into 145 train / 0 val"):
        build("omniglot", train_fraction=0.6, val_fraction=0.0)


def test_omniglot_root_that_does_not_exist_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "no-omniglot"
    with pytest.raises(ConfigError, match=rf"dataset 'omniglot': root = '{missing}' is not an existing folder"):
        build("omniglot", root=str(missing))
    with pytest.raises(ConfigError, match=r"holds no images_background\* folder or zip"):
        build("omniglot", root=str(tmp_path))


def fake_omniglot(root: Path, image_set: str, alphabets: dict[str, int], drawers: int = 3) -> None:
    """A tiny ``images_*/<Alphabet>/<characterNN>/<id>_<drawer>.png`` tree: black strokes on white, as Omniglot."""
    for alphabet, n_characters in alphabets.items():
        for character in range(1, n_characters + 1):
            folder = root / image_set / alphabet / f"character{character:02d}"
            folder.mkdir(parents=True)
            for drawer in range(1, drawers + 1):
                pixels = np.full((105, 105), 255, dtype=np.uint8)
                pixels[10 * character : 10 * character + 20, 10 * drawer : 10 * drawer + 20] = 0
                Image.fromarray(pixels).convert("1").save(folder / f"{character:04d}_{drawer:02d}.png")


@pytest.mark.usefixtures("private_cache")
def test_full_omniglot_is_read_from_folders_and_zips_at_root(tmp_path):
    fake_omniglot(tmp_path, "images_background", {"Alpha": 3, "Beta": 2})
    fake_omniglot(tmp_path, "images_evaluation", {"Gamma": 3})
    evaluation = tmp_path / "images_evaluation"
    with zipfile.ZipFile(tmp_path / "images_evaluation.zip", "w") as archive:
        for png in sorted(evaluation.rglob("*.png")):
            archive.write(png, png.relative_to(tmp_path).as_posix())
    shutil.rmtree(evaluation)

    dataset = build("omniglot", root=str(tmp_path), train_fraction=0.5, val_fraction=0.25)
    names = sorted(n for s in SPLITS for n in dataset.split(s).class_names)
    assert len(names) == 8 and "Gamma/character03" in names and "Alpha/character01" in names
    assert dataset.split("train").images.shape[1:] == (3, 1, 28, 28)
    assert dataset.split("train").images.float().mean() < 128, "inverted to bright strokes"

    background_only = build("omniglot-lake20", root=str(tmp_path), val_fraction=0.4)
    names = [n for s in ("train", "val") for n in background_only.split(s).class_names]
    assert sorted(names) == [f"Alpha/character0{i}" for i in (1, 2, 3)] + [f"Beta/character0{i}" for i in (1, 2)]


@pytest.mark.usefixtures("private_cache")
def test_decoded_characters_are_cached_and_reused(tmp_path, monkeypatch):
    fake_omniglot(tmp_path, "images_background", {"Alpha": 4})
    first = build("omniglot", root=str(tmp_path), train_fraction=0.5, val_fraction=0.25)
    assert list(Path(os.environ["METABENCH_CACHE"]).glob("omniglot-*.npz"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(omniglot_module, "decode_image", no_decoding)
    again = build("omniglot", root=str(tmp_path), train_fraction=0.5, val_fraction=0.25)
    assert torch.equal(again.split("train").images, first.split("train").images)
    with pytest.raises(AssertionError, match="decoded again"):
        build("omniglot", root=str(tmp_path), image_size=20, train_fraction=0.5, val_fraction=0.25)


# ------------------------------------------------------------------------------------------------------ Lake's runs
def answer_keys() -> list[dict[int, int]]:
    """Read independently of the loader: per run, test item number -> training class number."""
    keys = []
    with zipfile.ZipFile(omniglot_module.LAKE_RUNS) as archive:
        for run in range(1, 21):
            lines = archive.read(f"run{run:02d}/class_labels.txt").decode().split("\n")
            pairs = [line.split() for line in lines if line.strip()]
            keys.append({int(item[-6:-4]): int(label[-6:-4]) for item, label in pairs})
    return keys


def test_lake_runs_are_the_20_official_one_shot_tasks_with_their_answer_keys(lake):
    tasks = lake.evaluation_tasks("test")
    assert tasks.n_tasks == 20 and tasks.n_way == 20
    assert tasks.support_x.shape == tasks.query_x.shape == (20, 20, 1, 28, 28)
    assert tasks.support_x.dtype == torch.float32 and 0 <= tasks.support_x.min() and tasks.support_x.max() <= 1
    assert torch.equal(tasks.support_y, torch.arange(20).repeat(20, 1))
    expected = torch.tensor([[key[item] - 1 for item in range(1, 21)] for key in answer_keys()])
    assert torch.equal(tasks.query_y, expected)
    assert lake.evaluation_tasks("val") is None


def test_lake_runs_query_matches_its_class_better_than_the_others(lake):
    """The answer key pairs images of one character: nearest-neighbour pixels agree with it far above chance."""
    tasks = lake.evaluation_tasks("test")
    support, query = tasks.support_x.flatten(2), tasks.query_x.flatten(2)
    blurred = [
        torch.nn.functional.avg_pool2d(x.view(-1, 1, 28, 28), 3, 1, 1).view(20, 20, -1) for x in (support, query)
    ]
    nearest = torch.cdist(blurred[1], blurred[0]).argmin(dim=2)
    assert (nearest == tasks.query_y).float().mean() > 0.1  # chance: 0.05


def test_lake_test_split_holds_each_runs_class_as_two_images(lake):
    tasks, split = lake.evaluation_tasks("test"), lake.split("test")
    assert split.images.shape == (400, 2, 1, 28, 28) and split.class_names[21] == "run02/class02"
    assert torch.equal(split.images[21, 0].float() / 255, tasks.support_x[1, 1])
    item = int((tasks.query_y[1] == 1).nonzero())
    assert torch.equal(split.images[21, 1].float() / 255, tasks.query_x[1, item])
    train, val = (set(lake.split(s).class_names) for s in ("train", "val"))
    assert len(train) + len(val) == 242 and not train & val


# ------------------------------------------------------------------------------------------------------ image-folder
def write_images(folder: Path, n: int, shade: int) -> None:
    folder.mkdir(parents=True)
    for index in range(n):
        Image.fromarray(np.full((10, 12, 3), (shade, index, 0), dtype=np.uint8)).save(folder / f"{index}.png")


@pytest.mark.usefixtures("private_cache")
def test_image_folder_reads_ragged_classes_and_splits_them(tmp_path):
    for c in range(6):
        write_images(tmp_path / f"class{c}", 2 + c % 3, shade=40 * c)
    (tmp_path / "notes.txt").write_text("ignored")
    dataset = build("image-folder", root=str(tmp_path), image_size=8, train_fraction=0.5, val_fraction=0.25)
    names = [n for s in SPLITS for n in dataset.split(s).class_names]
    assert sorted(names) == [f"class{c}" for c in range(6)]
    assert dataset.input_shape == (3, 8, 8)
    for split in SPLITS:
        part = dataset.split(split)
        counts = [2 + int(n[-1]) % 3 for n in part.class_names]
        assert part.min_examples() == min(counts)
        if part.counts is not None:
            assert part.counts.tolist() == counts
        for index, name in enumerate(part.class_names):
            assert (part.images[index, : counts[index], 0] == 40 * int(name[-1])).all()
    grey = build("image-folder", root=str(tmp_path), image_size=8, channels=1, split_by="class")
    assert grey.split("train").image_shape == (1, 8, 8)


@pytest.mark.usefixtures("private_cache")
def test_image_folder_named_groups_are_the_splits(tmp_path):
    for split in SPLITS:
        for c in range(2):
            write_images(tmp_path / split / f"{split}-{c}", 3, shade=10)
    dataset = build("image-folder", root=str(tmp_path), image_size=4)
    for split in SPLITS:
        assert dataset.split(split).class_names == (f"{split}/{split}-0", f"{split}/{split}-1")
    by_group = build(
        "image-folder", root=str(tmp_path), image_size=4, split_by="group", train_fraction=0.34, val_fraction=0.33
    )
    groups = [{n.split("/")[0] for n in by_group.split(s).class_names} for s in SPLITS]
    assert all(len(g) == 1 for g in groups) and set.union(*groups) == set(SPLITS)


@pytest.mark.usefixtures("private_cache")
def test_image_folder_bad_input_names_the_path(tmp_path):
    with pytest.raises(ConfigError, match="parameter 'root' is required"):
        build("image-folder")
    with pytest.raises(ConfigError, match=rf"root = '{tmp_path / 'absent'}' is not an existing folder"):
        build("image-folder", root=str(tmp_path / "absent"))
    write_images(tmp_path / "full", 2, shade=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=rf"class folder {tmp_path / 'empty'} holds no images"):
        build("image-folder", root=str(tmp_path))
    (tmp_path / "empty" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ConfigError, match=rf"{tmp_path / 'empty' / 'broken.png'}: cannot read the image"):
        build("image-folder", root=str(tmp_path))


# -------------------------------------------------------------------------------------------------------- regression
def test_sinusoid_tasks_are_sinusoids_with_amplitude_and_phase_in_range():
    dataset = build("sinusoid")
    assert dataset.task_type == "regression" and dataset.input_shape == (1,)
    tasks = dataset.split("train").sample(64, 10, 6, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert tasks.n_way is None and tasks.support_y.shape == (64, 10, 1) and tasks.query_x.shape == (64, 6, 1)
    x, y = torch.cat([tasks.support_x, tasks.query_x], 1).double(), torch.cat([tasks.support_y, tasks.query_y], 1)
    assert x.min() >= -5 and x.max() <= 5
    basis = torch.cat([torch.sin(x), torch.cos(x)], dim=2)  # A sin(x - p) = A cos p sin x - A sin p cos x
    coefficients = torch.linalg.lstsq(basis, y.double()).solution.squeeze(-1)
    assert torch.allclose(basis @ coefficients.unsqueeze(-1), y.double(), atol=1e-4)
    amplitude = coefficients.norm(dim=1)
    phase = torch.atan2(-coefficients[:, 1], coefficients[:, 0])
    assert amplitude.min() >= 0.1 - 1e-4 and amplitude.max() <= 5 + 1e-4
    assert phase.min() >= -1e-4 and phase.max() <= math.pi + 1e-4
    assert amplitude.std() > 0.5 and phase.std() > 0.3


def fitted_slope(x: torch.Tensor, y: torch.Tensor) -> float:
    return float((x * y).sum() / (x * x).sum())


def test_noisy_linear_support_and_query_lie_on_their_lines():
    dataset = build("noisy-linear")
    rng = torch.Generator().manual_seed(0)
    train = dataset.split("train").sample(50, 40, 40, rng, torch.device("cpu"))
    assert train.support_y.shape == (50, 40, 1) and train.n_way is None
    assert fitted_slope(train.support_x, train.support_y) == pytest.approx(5.3, abs=0.01)
    assert fitted_slope(train.query_x, train.query_y) == pytest.approx(4.7, abs=0.01)
    residual = train.support_y - 5.3 * train.support_x
    assert residual.std() == pytest.approx(0.1, rel=0.1)
    test = dataset.split("test").sample(5, 10, 10, rng, torch.device("cpu"))
    assert torch.allclose(test.query_y, 5 * test.query_x)
    assert fitted_slope(test.support_x, test.support_y) == pytest.approx(5.3, abs=0.05)


def test_noisy_linear_slopes_and_noise_are_parameters():
    dataset = build("noisy-linear", true_slope=-1.0, support_slope=2.0, query_slope=3.0, noise=0.0)
    rng = torch.Generator().manual_seed(0)
    train = dataset.split("train").sample(2, 5, 5, rng, torch.device("cpu"))
    assert torch.allclose(train.support_y, 2 * train.support_x) and torch.allclose(train.query_y, 3 * train.query_x)
    test = dataset.split("val").sample(2, 5, 5, rng, torch.device("cpu"))
    assert torch.allclose(test.query_y, -test.query_x)
    with pytest.raises(ConfigError, match=r"x_low = 2.0 exceeds x_high = 1.0"):
        build("noisy-linear", x_low=2.0, x_high=1.0)


def test_dataset_seed_must_be_an_integer():
    with pytest.raises(ConfigError, match=r"dataset 'omniglot' parameter 'seed' = 1.5: expected int"):
        build("omniglot", seed=1.5)
