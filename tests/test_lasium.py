"""LASIUM samplers: anchors, the three in-class strategies, task layout, determinism, the generator cache.

Most tests bind the samplers to ``latent-images``, a test generator whose images *are* its latents (``decode`` is a
reshape), so the latent-space geometry can be read off the generated tasks without a trained network.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from metabench import ConfigError, Param, Registry, hookimpl, parameters
from metabench.interfaces import ImageSplit, SamplerContext
from metabench.plugins import generative_models, samplers
from metabench.plugins.generative_models.vae import ConvVAE
from metabench.plugins.samplers import lasium
from metabench.tasks import TaskShape

LATENT_DIM = 6


class LatentImages(nn.Module):
    """A "pretrained" generator (``fit`` returns ``[]``) whose image of ``z`` is ``z`` itself, shaped ``[1, 1, d]``;
    it remembers the prior draws so RO's out-of-class latents can be checked."""

    can_encode = False
    pretrained = True

    def __init__(self, image_shape: tuple[int, ...]):
        super().__init__()
        self.latent_dim = image_shape[-1]
        self.prior_draws: list[Tensor] = []

    def fit(self, images: Tensor, rng: torch.Generator, progress: bool) -> list[float]:
        return []

    def sample_prior(self, n: int, rng: torch.Generator) -> Tensor:
        self.prior_draws.append(torch.randn(n, self.latent_dim, generator=rng))
        return self.prior_draws[-1]

    def decode(self, z: Tensor) -> Tensor:
        return z.view(len(z), 1, 1, self.latent_dim)

    def encode(self, x: Tensor) -> Tensor:
        raise NotImplementedError


@parameters(Param("epochs", int, 2, "epochs"), Param("width", int, 4, "filters"))
class CountingVAE(ConvVAE):
    fits = 0

    def __init__(self, image_shape: tuple[int, ...], *, epochs: int, width: int):
        super().__init__(image_shape, latent_dim=20, width=width, epochs=epochs, batch_size=32, lr=1e-3)

    def fit(self, images: Tensor, rng: torch.Generator, progress: bool) -> list[float]:
        CountingVAE.fits += 1
        return super().fit(images, rng, progress)


class TestPlugin:
    @hookimpl
    def metabench_register_generative_models(self, register):
        register("latent-images", LatentImages, summary="Images are the latents (tests).")
        register("counting-vae", CountingVAE, summary="A VAE that counts its trainings (tests).")


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load([samplers, generative_models, TestPlugin()], entry_points=False)


def context(registry: Registry, cache: Path, seed: int = 0) -> SamplerContext:
    return SamplerContext(torch.device("cpu"), seed, cache, "test-images", registry, progress=False)


def random_split(image_shape: tuple[int, ...], classes: int = 6, examples: int = 4, seed: int = 0) -> ImageSplit:
    rng = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (classes, examples, *image_shape), generator=rng, dtype=torch.uint8)
    return ImageSplit(images, tuple(f"c{i}" for i in range(classes)))


def bind_latent(registry: Registry, tmp_path: Path, sampler: str, shape: TaskShape, **params):
    built = registry.build("sampler", sampler, {"model": "latent-images", **params})
    return built.bind(random_split((1, 1, LATENT_DIM)), shape, context(registry, tmp_path), role="train")


def per_class(x: Tensor, n_way: int) -> Tensor:
    """``[T, N*K, 1, 1, d]`` (label-ordered) as latents ``[T, N, K, d]``."""
    return x.view(x.shape[0], n_way, -1, x.shape[-1])


def draw_normal(n_way: int, dim: int, rng: torch.Generator, calls: list[int]):
    def draw(t: int):
        calls.append(t)
        return torch.randn(t, n_way, dim, generator=rng), None

    return draw


# ---------------------------------------------------------------------------------------------------------- anchors
def test_anchors_are_at_least_epsilon_apart_and_resamplings_are_counted():
    calls: list[int] = []
    rng = torch.Generator().manual_seed(0)
    # N(0, I) points in 3-d are about 2.4 apart: epsilon 1.5 rejects a good share of 5-point sets.
    anchors = lasium.sample_anchors(draw_normal(5, 3, rng, calls), 200, 1.5, 1000, where="test")
    distances = torch.cdist(anchors.latents, anchors.latents)
    off_diagonal = ~torch.eye(5, dtype=torch.bool)
    assert distances[:, off_diagonal].min() >= 1.5
    assert anchors.resamples > 0
    assert anchors.resamples == sum(calls[1:])  # every redraw after the first draw is one rejected task


def test_epsilon_zero_never_resamples():
    calls: list[int] = []
    anchors = lasium.sample_anchors(draw_normal(5, 3, torch.Generator(), calls), 50, 0.0, 10, where="test")
    assert anchors.resamples == 0 and calls == [50]


def test_anchor_give_up_error_names_epsilon_and_distances():
    draw = draw_normal(5, 2, torch.Generator().manual_seed(0), [])
    with pytest.raises(ConfigError) as error:
        lasium.sample_anchors(draw, 4, 100.0, 7, where="sampler 'lasium-n'")
    message = str(error.value)
    assert "epsilon = 100" in message and "max_resamples = 7" in message
    assert "sampler 'lasium-n'" in message and "4 of 4 tasks" in message
    assert "32 rejected draws" in message  # 4 first draws + 7 rounds of 4 redraws


def test_bound_sampler_respects_epsilon_on_generated_tasks(registry, tmp_path):
    shape = TaskShape(5, 1, 1)
    source = bind_latent(registry, tmp_path, "lasium-n", shape, epsilon=2.0, sigma=0.0)
    tasks = source(64, torch.Generator().manual_seed(1))
    anchors = per_class(tasks.support_x, 5)[:, :, 0]
    assert lasium.closest_pair_distance(anchors).min() >= 2.0
    assert source.resamples > 0 and source.tasks_drawn == 64


# ------------------------------------------------------------------------------------------------ in-class samples
@pytest.mark.parametrize(("sigma_is", "std"), [("std", 0.25), ("variance", 0.5)])
def test_noise_spread_matches_sigma_read_as_std_or_variance(registry, tmp_path, sigma_is, std):
    shape = TaskShape(3, 5, 15)
    source = bind_latent(registry, tmp_path, "lasium-n", shape, sigma=0.25, sigma_is=sigma_is)
    tasks = source(200, torch.Generator().manual_seed(2))
    support, query = per_class(tasks.support_x.flatten(2), 3), per_class(tasks.query_x.flatten(2), 3)
    latents = torch.cat([support, query], 2)
    offsets = latents[:, :, 1:] - latents[:, :, :1]
    assert offsets.std().item() == pytest.approx(std, rel=0.03)  # 'variance': sqrt(0.25) = 0.5
    assert offsets.mean().abs().item() < 0.01


def test_lasium_n_defaults_to_the_authors_standard_deviation_of_half(registry):
    params = {p.name: p.default for p in registry.get("sampler", "lasium-n").params}
    assert params["sigma"] == 0.5 and params["sigma_is"] == "std"


def test_noise_latents_function_without_decoding():
    anchors = torch.zeros(50, 4, 8)
    new = lasium.noise_latents(anchors, 10, 2.0, torch.Generator().manual_seed(0))
    assert new.shape == (50, 4, 10, 8)
    assert new.std().item() == pytest.approx(2.0, rel=0.03)


def test_random_out_points_lie_on_the_segment_toward_v_at_alpha(registry, tmp_path):
    shape = TaskShape(4, 2, 3)
    source = bind_latent(registry, tmp_path, "lasium-ro", shape, alpha=0.3, epsilon=0.0)
    assert source.out_of_class_radius == 0.0  # none = epsilon
    source.model.prior_draws.clear()
    tasks = source(10, torch.Generator().manual_seed(3))
    anchors_draw, fresh = source.model.prior_draws  # epsilon 0: one anchor draw, then the v's
    support, query = per_class(tasks.support_x.flatten(2), 4), per_class(tasks.query_x.flatten(2), 4)
    latents = torch.cat([support, query], 2)  # [T, N, K, d]
    z = latents[:, :, :1]
    v = fresh.view(10, 4, 4, LATENT_DIM)
    torch.testing.assert_close(z.squeeze(2), anchors_draw.view(10, 4, LATENT_DIM))
    torch.testing.assert_close(latents[:, :, 1:], z + 0.3 * (v - z))
    # the same through the pure function, and the geometry: |z' - z| = alpha |v - z|, same direction
    step = lasium.random_out_latents(z.squeeze(2), v, 0.3) - z
    torch.testing.assert_close(step.norm(dim=-1), 0.3 * (v - z).norm(dim=-1))
    cosine = torch.nn.functional.cosine_similarity(step, v - z, dim=-1)
    torch.testing.assert_close(cosine, torch.ones_like(cosine))


def test_random_out_v_is_redrawn_until_out_of_the_radius_by_hand(registry, tmp_path):
    shape, radius = TaskShape(3, 1, 4), 3.5  # N(0, I) in 6 dimensions: |v - z| ~ sqrt(12) = 3.5, half rejected
    source = bind_latent(registry, tmp_path, "lasium-ro", shape, alpha=0.5, out_of_class_radius=radius)
    source.model.prior_draws.clear()
    tasks = source(40, torch.Generator().manual_seed(5))
    anchors_draw, first, *redraws = source.model.prior_draws
    assert redraws  # some v fell inside the radius and were redrawn
    z = anchors_draw.view(40, 3, 1, LATENT_DIM)
    # by hand: replay the rejection on the recorded draws
    v = first.view(40, 3, 4, LATENT_DIM).clone()
    for draw in redraws:
        inside = (v - z).norm(dim=-1) < radius
        assert int(inside.sum()) == len(draw)
        v[inside] = draw
    assert ((v - z).norm(dim=-1) >= radius).all()
    latents = torch.cat([per_class(tasks.support_x.flatten(2), 3), per_class(tasks.query_x.flatten(2), 3)], 2)
    torch.testing.assert_close(latents[:, :, 1:], z + 0.5 * (v - z))


def test_random_out_radius_defaults_to_epsilon_and_fails_clearly_when_unreachable(registry, tmp_path):
    assert bind_latent(registry, tmp_path, "lasium-ro", TaskShape(2, 1, 1), epsilon=0.5).out_of_class_radius == 0.5
    source = bind_latent(
        registry, tmp_path, "lasium-ro", TaskShape(2, 1, 1), out_of_class_radius=100.0, max_resamples=3
    )
    with pytest.raises(ConfigError, match=r"out_of_class_radius = 100 .*max_resamples = 3"):
        source(4, torch.Generator().manual_seed(6))


def test_other_class_points_move_toward_another_anchor_of_the_same_task(registry, tmp_path):
    shape, alpha = TaskShape(4, 1, 5), 0.25
    tasks = bind_latent(registry, tmp_path, "lasium-oc", shape, alpha=alpha)(20, torch.Generator().manual_seed(4))
    support, query = per_class(tasks.support_x.flatten(2), 4), per_class(tasks.query_x.flatten(2), 4)
    latents = torch.cat([support, query], 2)
    anchors = latents[:, :, 0]  # [T, N, d]
    targets = latents[:, :, :1] + (latents[:, :, 1:] - latents[:, :, :1]) / alpha  # [T, N, K-1, d]
    # distance from every implied target to every anchor of the same task: [T, N, K-1, N]
    gaps = (targets.unsqueeze(3) - anchors[:, None, None]).norm(dim=-1)
    nearest = gaps.argmin(dim=-1)
    assert gaps.amin(dim=-1).max() < 1e-4  # each target is an anchor of the task...
    own = torch.arange(4).view(1, 4, 1).expand_as(nearest)
    assert (nearest != own).all()  # ...of another class
    assert len(nearest.unique()) == 4


def test_other_class_needs_two_classes(registry, tmp_path):
    with pytest.raises(ConfigError, match="n_way >= 2"):
        bind_latent(registry, tmp_path, "lasium-oc", TaskShape(1, 1, 1))


# --------------------------------------------------------------------------------------------- tasks and binding
def test_task_labels_sizes_and_determinism(registry, tmp_path):
    shape = TaskShape(5, 2, 3)
    source = bind_latent(registry, tmp_path, "lasium-ro", shape)
    first = source(7, torch.Generator().manual_seed(5))
    again = source(7, torch.Generator().manual_seed(5))
    other = source(7, torch.Generator().manual_seed(6))
    assert first.n_way == 5 and first.n_tasks == 7
    assert first.support_x.shape == (7, 10, 1, 1, LATENT_DIM) and first.query_x.shape == (7, 15, 1, 1, LATENT_DIM)
    assert first.support_y.dtype == torch.int64
    assert first.support_y[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert (first.query_y == torch.arange(5).repeat_interleave(3)).all()
    for a, b in [(first.support_x, again.support_x), (first.query_x, again.query_x)]:
        assert torch.equal(a, b)
    assert not torch.equal(first.query_x, other.query_x)
    assert not (tmp_path / "generative-models").exists()  # a pretrained generator (fit returns []) is not cached


def test_evaluation_roles_draw_the_standard_tasks_of_the_real_classes(registry, tmp_path):
    sampler = registry.build("sampler", "lasium-n", {"model": "latent-images"})
    standard = registry.build("sampler", "standard")
    split = random_split((1, 1, LATENT_DIM))
    for role in ("val", "test"):
        lasium_source = sampler.bind(split, TaskShape(5, 1, 1), context(registry, tmp_path), role=role)
        standard_source = standard.bind(split, TaskShape(5, 1, 1), context(registry, tmp_path), role=role)
        drawn = lasium_source(3, torch.Generator().manual_seed(1))
        assert torch.equal(drawn.query_x, standard_source(3, torch.Generator().manual_seed(1)).query_x)


def test_model_params_are_validated(registry, tmp_path):
    sampler = registry.build("sampler", "lasium-n", {"model": "vae", "model_params": {"epoch": 3}})
    with pytest.raises(ConfigError, match="model_params.*'epoch'.*did you mean 'epochs'"):
        sampler.bind(random_split((1, 8, 8)), TaskShape(2, 1, 1), context(registry, tmp_path), role="train")


def test_encoded_anchors_need_an_encoder(registry, tmp_path):
    sampler = registry.build("sampler", "lasium-n", {"model": "gan", "anchors": "encoded"})
    with pytest.raises(ConfigError, match="no encoder"):
        sampler.bind(random_split((1, 8, 8)), TaskShape(2, 1, 1), context(registry, tmp_path), role="train")


def test_vae_tasks_have_the_dataset_shape_and_range_and_the_model_is_cached(registry, tmp_path):
    split = random_split((1, 8, 8), classes=5, examples=3)
    shape = TaskShape(3, 1, 2)
    sampler = registry.build("sampler", "lasium-oc", {"model": "counting-vae", "model_params": {"epochs": 2}})
    CountingVAE.fits = 0
    source = sampler.bind(split, shape, context(registry, tmp_path), role="train")
    assert CountingVAE.fits == 1 and len(source.model_curve) == 2
    tasks = source(4, torch.Generator().manual_seed(7))
    for x, size in [(tasks.support_x, 3), (tasks.query_x, 6)]:
        assert x.shape == (4, size, 1, 8, 8) and x.dtype == torch.float32
        assert x.min() >= 0 and x.max() <= 1
    # encoded anchors: each class's first support image is a real image of the split, the others are decoded
    real = split.images.flatten(0, 1).float().div(255).flatten(1)
    match = (tasks.support_x.flatten(2).unsqueeze(2) - real).abs().amax(-1).amin(-1)
    assert (match == 0).all()

    again = sampler.bind(split, shape, context(registry, tmp_path), role="train")
    assert CountingVAE.fits == 1  # loaded from the cache, not retrained
    assert again.model_curve == source.model_curve
    assert torch.equal(again(4, torch.Generator().manual_seed(7)).query_x, tasks.query_x)
    stored = sorted(p.suffix for p in (tmp_path / "generative-models").iterdir())
    assert stored == [".json", ".pt"]  # no temporary file left behind

    sampler.bind(split, shape, context(registry, tmp_path, seed=1), role="train")
    assert CountingVAE.fits == 2  # another seed is another generator


def test_ragged_split_images_are_used_without_padding():
    images = torch.zeros(3, 4, 1, 2, 2, dtype=torch.uint8)
    images[:, :, 0, 0, 0] = torch.arange(1, 13, dtype=torch.uint8).view(3, 4)
    split = ImageSplit(images, ("a", "b", "c"), counts=torch.tensor([4, 2, 3]))
    flat = lasium.unlabelled_images(split)
    assert sorted(flat[:, 0, 0, 0].tolist()) == [1, 2, 3, 4, 5, 6, 9, 10, 11]


def test_samplers_are_registered_with_documented_params(registry):
    for name, amount in [("lasium-n", "sigma"), ("lasium-ro", "alpha"), ("lasium-oc", "alpha")]:
        spec = registry.get("sampler", name)
        names = {p.name for p in spec.params}
        assert {"model", "model_params", "epsilon", "max_resamples", amount} <= names
        assert all(p.doc for p in spec.params) and spec.summary


def test_a_checking_bind_does_not_train_the_model_but_uses_a_cached_one(registry, tmp_path):
    """Preflight and the dry run bind with ``checking``: a paper profile's generator (hours of training) must not be
    trained by a dry run, and the run that trains it afterwards still caches it."""
    split = random_split((1, 8, 8), classes=5, examples=3)
    shape = TaskShape(3, 1, 2)
    sampler = registry.build("sampler", "lasium-ro", {"model": "counting-vae", "model_params": {"epochs": 2}})
    CountingVAE.fits = 0
    checking = replace(context(registry, tmp_path), checking=True)
    assert sampler.bind(split, shape, checking, role="train").model_curve == []
    assert CountingVAE.fits == 0 and not (tmp_path / "generative-models").exists()
    # its tasks can still be drawn (preflight draws one), although an untrained model's latents lie within any epsilon
    big_epsilon = registry.build("sampler", "lasium-ro", {"model": "counting-vae", "epsilon": 1e6})
    assert big_epsilon.bind(split, shape, checking, role="train")(1, torch.Generator()).support_x.shape[0] == 1
    trained = sampler.bind(split, shape, context(registry, tmp_path), role="train")
    assert CountingVAE.fits == 1
    assert sampler.bind(split, shape, checking, role="train").model_curve == trained.model_curve


def test_a_checking_bind_names_the_models_the_run_will_train_and_how_long_other_seeds_took(registry, tmp_path):
    split = random_split((1, 8, 8), classes=5, examples=3)
    shape = TaskShape(3, 1, 2)
    sampler = registry.build("sampler", "lasium-ro", {"model": "counting-vae", "model_params": {"epochs": 2}})
    checking = replace(context(registry, tmp_path), checking=True)
    sampler.bind(split, shape, checking, role="train")
    assert checking.left_untrained == ["generative model 'counting-vae epochs=2' (seed 0)"]

    sampler.bind(split, shape, context(registry, tmp_path), role="train")  # seed 0 trained and cached
    took = json.loads(next((tmp_path / "generative-models").glob("*.json")).read_text())["train_seconds"]
    seed_1 = replace(context(registry, tmp_path, seed=1), checking=True)
    sampler.bind(split, shape, seed_1, role="train")
    expected = f"about {took:.0f} s (the median of 1 other seed, by the cache)"
    assert seed_1.left_untrained == [f"generative model 'counting-vae epochs=2' (seed 1): {expected}"]
    other_params = replace(context(registry, tmp_path, seed=1), checking=True)
    wider = registry.build("sampler", "lasium-ro", {"model": "counting-vae", "model_params": {"epochs": 3}})
    wider.bind(split, shape, other_params, role="train")
    assert other_params.left_untrained == ["generative model 'counting-vae epochs=3' (seed 1)"]

    pretrained = replace(context(registry, tmp_path), checking=True)
    registry.build("sampler", "lasium-ro", {"model": "latent-images"}).bind(
        random_split((1, 1, LATENT_DIM), classes=5, examples=3), shape, pretrained, role="train"
    )
    assert pretrained.left_untrained == []  # it trains nothing
