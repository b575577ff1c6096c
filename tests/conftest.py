import fake_components
import pytest
import torch

from metabench import cli
from metabench.registry import Registry

# Two cores, and tests run tiny models: one thread avoids oversubscription and keeps timings steady.
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def fake_registry() -> Registry:
    """The fake components (tests/fake_components.py) alone: nothing installed is loaded."""
    return Registry.load(extra_plugins=[fake_components], entry_points=False)


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch, fake_registry: Registry) -> Registry:
    """The CLI's registry is the fake components, nothing installed."""
    monkeypatch.setattr(cli, "default_registry", lambda: fake_registry)
    return fake_registry
