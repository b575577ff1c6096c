"""Backbones: mixable layers, batch norm from primitives, initialisation, and parameter validation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from metabench.errors import ConfigError
from metabench.plugins.backbones.layers import batch_norm, batch_norm_primitives
from metabench.registry import default_registry


def build(name: str, params: dict | None = None, **context):
    return default_registry().build("backbone", name, params or {}, where="test", **context)


@pytest.mark.parametrize(
    ("input_shape", "representation"),
    [((1, 28, 28), 64 * 1 * 1), ((3, 84, 84), 64 * 5 * 5)],
)
def test_conv4_layers_compose_to_the_full_forward(input_shape, representation):
    net = build("conv4", input_shape=input_shape, out_dim=5)
    x = torch.randn(4, *input_shape, generator=torch.Generator().manual_seed(0))
    assert net.n_layers == 5
    assert net(x, 0, 4).shape == (4, representation)
    full = net(x)
    assert full.shape == (4, 5)
    for layer in range(net.n_layers):
        torch.testing.assert_close(net(net(x, 0, layer), start=layer), full)


def test_conv4_hidden_shapes_and_filters():
    net = build("conv4", {"filters": 8}, input_shape=(1, 28, 28), out_dim=3)
    x = torch.randn(2, 1, 28, 28)
    assert [tuple(net(x, 0, layer).shape) for layer in range(1, 4)] == [(2, 8, 14, 14), (2, 8, 7, 7), (2, 8, 3, 3)]


def test_conv4_rejects_inputs_it_cannot_pool():
    with pytest.raises(ConfigError, match="too small"):
        build("conv4", input_shape=(1, 8, 8), out_dim=5)
    with pytest.raises(ConfigError, match="image inputs"):
        build("conv4", input_shape=(1,), out_dim=5)


def test_mlp_widths_activation_and_batch_norm():
    net = build("mlp", {"widths": [7, 5], "activation": "tanh", "batch_norm": True}, input_shape=(3,), out_dim=2)
    x = torch.randn(6, 3)
    assert net.n_layers == 3
    assert net(x, 0, 1).shape == (6, 7) and net(x, 0, 2).shape == (6, 5) and net(x).shape == (6, 2)
    assert net(x, 0, 1).abs().max() <= 1  # tanh
    assert sum(name.endswith(".1.weight") for name, _ in net.named_parameters()) == 2  # one norm per block
    torch.testing.assert_close(net(net(x, 0, 1), start=1), net(x))
    with pytest.raises(ConfigError, match="activation"):
        build("mlp", {"activation": "gelu"}, input_shape=(3,), out_dim=2)


def test_head_prefix_names_only_the_head():
    net = build("mlp", input_shape=(1,), out_dim=1)
    head = [name for name, _ in net.named_parameters() if name.startswith(net.head_prefix)]
    assert head == ["head.weight", "head.bias"]


def test_batch_norm_from_primitives_matches_torch_and_batch_norm_matches_both_inside_and_outside_vmap():
    h = torch.randn(2, 5, 3, 4, 4, dtype=torch.float64)
    weight, bias = torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    expected = torch.stack([F.batch_norm(task, None, None, weight, bias, training=True) for task in h])
    torch.testing.assert_close(torch.stack([batch_norm_primitives(task, weight, bias) for task in h]), expected)
    torch.testing.assert_close(torch.stack([batch_norm(task, weight, bias) for task in h]), expected)
    torch.testing.assert_close(torch.func.vmap(batch_norm, in_dims=(0, None, None))(h, weight, bias), expected)


def test_forward_is_pure_in_its_parameters_and_vmaps():
    net = build("conv4", {"filters": 4}, input_shape=(1, 16, 16), out_dim=3)
    params = {name: p.detach() for name, p in net.named_parameters()}
    stacked = {name: torch.stack([p, 2 * p]) for name, p in params.items()}
    x = torch.randn(2, 3, 1, 16, 16)
    batched = torch.func.vmap(lambda p, xb: functional_call(net, p, (xb,)))(stacked, x)
    for task in range(2):
        one = {name: p[task] for name, p in stacked.items()}
        torch.testing.assert_close(batched[task], functional_call(net, one, (x[task],)))


def test_init_parameters_follow_the_generator():
    net = build("conv4", {"filters": 4}, input_shape=(1, 16, 16), out_dim=3)
    first = net.init_parameters(torch.Generator().manual_seed(0))
    again = net.init_parameters(torch.Generator().manual_seed(0))
    other = net.init_parameters(torch.Generator().manual_seed(1))
    assert set(first) == {name for name, _ in net.named_parameters()}
    for name in first:
        torch.testing.assert_close(first[name], again[name])
    assert not torch.equal(first["head.weight"], other["head.weight"])
    assert torch.equal(first["blocks.0.1.weight"], torch.ones(4))  # norm scale
