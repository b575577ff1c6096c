"""The built-in generators (``vae``, ``gan``): shapes and ranges, training progress, determinism, the cache."""

from __future__ import annotations

import pytest
import torch

from metabench import Registry
from metabench.plugins import generative_models
from metabench.plugins.generative_models.training import fit_or_load, reinitialise

TINY = {"latent_dim": 8, "width": 8, "batch_size": 16, "lr": 1e-3}


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load([generative_models], entry_points=False)


def bars(n: int, seed: int = 0) -> torch.Tensor:
    """``uint8 [n, 1, 8, 8]`` images of one bright horizontal or vertical bar."""
    rng = torch.Generator().manual_seed(seed)
    horizontal = torch.randint(0, 2, (n,), generator=rng).bool()
    position = torch.randint(1, 7, (n,), generator=rng)
    grid = torch.arange(8)
    rows = (grid.view(1, 8, 1) == position.view(n, 1, 1)).expand(n, 8, 8)
    columns = (grid.view(1, 1, 8) == position.view(n, 1, 1)).expand(n, 8, 8)
    images = torch.where(horizontal.view(n, 1, 1), rows, columns)
    return (images.unsqueeze(1) * 255).to(torch.uint8)


def build(registry: Registry, name: str, image_shape=(1, 8, 8), **params):
    return registry.build("generative-model", name, {**TINY, **params}, image_shape=image_shape)


@pytest.mark.parametrize("name", ["vae", "gan"])
@pytest.mark.parametrize("image_shape", [(1, 8, 8), (3, 10, 6), (1, 28, 28)])
def test_decoded_images_have_the_dataset_shape_and_range(registry, name, image_shape):
    model = build(registry, name, image_shape).eval()
    with torch.no_grad():
        z = model.sample_prior(5, torch.Generator().manual_seed(0))
        images = model.decode(z)
    assert z.shape == (5, 8)
    assert images.shape == (5, *image_shape) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1


def test_vae_encodes_to_its_latent_space_and_the_gan_cannot(registry):
    vae, gan = build(registry, "vae").eval(), build(registry, "gan")
    assert vae.can_encode and not gan.can_encode
    with torch.no_grad():
        assert vae.encode(bars(4).float() / 255).shape == (4, 8)


def test_vae_training_loss_falls(registry, capsys):
    curve = build(registry, "vae", epochs=4).fit(bars(64), torch.Generator().manual_seed(0), progress=True)
    assert len(curve) == 4
    assert curve[-1] < 0.9 * curve[0]
    assert "training vae" in capsys.readouterr().err  # the progress bar


def test_gan_training_makes_progress(registry):
    model = build(registry, "gan", epochs=8, width=16)
    curve = model.fit(bars(64), torch.Generator().manual_seed(0), progress=False)
    # The curve is the discriminator's loss: it starts near chance (2 ln 2) and falls as it learns to tell real from
    # generated; the mode-seeking term falls as the generator's images come to depend on the latent.
    assert len(curve) == 8 and curve[0] == pytest.approx(2 * torch.log(torch.tensor(2.0)).item(), abs=0.15)
    assert curve[-1] < curve[0] - 0.1
    mode_seeking = model.history["mode_seeking"]
    assert mode_seeking[-1] < 0.5 * mode_seeking[0]


def test_gan_images_depend_more_on_the_latent_after_training(registry):
    rng = torch.Generator().manual_seed(1)
    untrained = build(registry, "gan")
    reinitialise(untrained, torch.Generator().manual_seed(1))
    trained = build(registry, "gan", epochs=3)
    trained.fit(bars(64), rng, progress=False)

    def spread(model) -> float:
        with torch.no_grad():
            return model.eval().decode(model.sample_prior(64, torch.Generator().manual_seed(2))).std(0).mean().item()

    assert spread(trained) > 2 * spread(untrained)


@pytest.mark.parametrize("name", ["vae", "gan"])
def test_training_is_deterministic_under_a_seed(registry, name):
    curves, images = [], []
    for _ in range(2):
        model = build(registry, name, epochs=1)
        curves.append(model.fit(bars(32), torch.Generator().manual_seed(3), progress=False))
        with torch.no_grad():
            images.append(model.eval().decode(model.sample_prior(3, torch.Generator().manual_seed(4))))
    assert curves[0] == curves[1]
    assert torch.equal(images[0], images[1])


def test_fit_or_load_caches_weights_and_curve(registry, tmp_path):
    images = bars(32)
    key = {"dataset": "bars", "split": "train", "params": {"epochs": 1}}
    first = build(registry, "vae", epochs=1)
    curve = fit_or_load(first, images, cache_dir=tmp_path, key_parts=key, name="vae", seed=0, progress=False)
    files = sorted(p.name for p in (tmp_path / "generative-models").iterdir())
    assert [f.rsplit(".", 1)[1] for f in files] == ["json", "pt"]

    second = build(registry, "vae", epochs=1)
    second.fit = None  # loading must not train
    assert fit_or_load(second, images, cache_dir=tmp_path, key_parts=key, name="vae", seed=0, progress=False) == curve
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not second.training


def test_generators_are_registered_with_documented_params(registry):
    for name in ("vae", "gan"):
        spec = registry.get("generative-model", name)
        assert spec.summary and all(p.doc for p in spec.params)
        assert {"epochs", "batch_size", "lr", "latent_dim"} <= {p.name for p in spec.params}
    assert registry.get("generative-model", "vae").defaults()["latent_dim"] == 20
