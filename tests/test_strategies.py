"""Outer-loop data strategies, exercised through the registry as a learner would use them."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call, vmap

from metabench import ConfigError, MixPlan, OuterBatch, TaskBatch
from metabench.registry import default_registry

MIXING = ["mixup-ss", "mixup-qq", "metamix", "multimix", "multi-mix", "metamixup"]
SUPPORT_QUERY_MIXING = ["metamix", "multi-mix", "metamixup"]  # MetaMix's pairing of each query with a support sample


def strategy(name: str, **params: object):
    return default_registry().build("strategy", name, params, where="test")


def make_tasks(
    seed: int, n_tasks: int = 3, n_way: int | None = 2, support: int = 2, query: int = 4, x_shape=(1, 8, 8)
) -> TaskBatch:
    """``support``/``query`` examples per class (per task for regression), labels in class order like a sampler's."""
    generator = torch.Generator().manual_seed(seed)
    classes = n_way or 1
    support_x = torch.randn(n_tasks, classes * support, *x_shape, generator=generator)
    query_x = torch.randn(n_tasks, classes * query, *x_shape, generator=generator)
    if n_way is None:
        support_y = torch.randn(n_tasks, support, 2, generator=generator)
        query_y = torch.randn(n_tasks, query, 2, generator=generator)
    else:
        support_y = torch.arange(n_way).repeat_interleave(support).expand(n_tasks, -1)
        query_y = torch.arange(n_way).repeat_interleave(query).expand(n_tasks, -1)
    return TaskBatch(support_x, support_y, query_x, query_y, n_way)


def backbone_encoder(name: str, params: dict, input_shape, out_dim: int = 2):
    backbone = default_registry().build(
        "backbone", name, params, where="test", input_shape=input_shape, out_dim=out_dim
    )
    weights = dict(backbone.named_parameters())

    def encode(x: Tensor, layer: int) -> Tensor:
        return functional_call(backbone, weights, (x,), {"stop": layer})

    return backbone, weights, encode


def conv_encoder():
    """A tiny real conv4 (3 filters, 2 blocks) on 8x8 images: mixable layers 0, 1, 2."""
    return backbone_encoder("conv4", {"filters": 3, "blocks": 2}, (1, 8, 8))


def apply_task(strat, plan: MixPlan, encode, tasks: TaskBatch, index: int) -> OuterBatch:
    return strat.apply(
        plan.task(index),
        encode,
        tasks.support_x[index],
        tasks.soft_targets(tasks.support_y[index]),
        tasks.query_x[index],
        tasks.soft_targets(tasks.query_y[index]),
    )


def with_tensor(plan: MixPlan, name: str, value: Tensor) -> MixPlan:
    return replace(plan, tensors={**plan.tensors, name: value})


# ------------------------------------------------------------------------------------------------ registration
def test_every_strategy_is_registered_with_a_summary_and_only_query_is_plain():
    names = default_registry().names("strategy")
    assert set(names) >= {"query", "cob", *MIXING}
    for spec in default_registry().specs("strategy"):
        assert spec.summary and all(p.doc for p in spec.params)
    assert [name for name in names if strategy(name).plain] == ["query"]


def test_bad_parameters_are_config_errors_naming_the_value():
    with pytest.raises(ConfigError, match="alpha"):
        strategy("metamix", alpha=0.0)
    with pytest.raises(ConfigError, match="layers"):
        strategy("metamix", layers=[-1])
    with pytest.raises(ConfigError, match=r"layers' = \[\]"):
        strategy("mixup-ss", layers=[])
    with pytest.raises(ConfigError, match="alpha_low = 3.0 > alpha_high = 1.0"):
        strategy("multimix", alpha_low=3.0, alpha_high=1.0)
    with pytest.raises(ConfigError, match=r"layer\(s\) \[5\] do not exist.*0\.\.2"):
        strategy("metamix", layers=[1, 5]).plan(torch.Generator().manual_seed(0), make_tasks(0), 3)


# ------------------------------------------------------------------------------------------------ basic strategies
def test_query_is_the_query_set_at_the_inputs():
    tasks = make_tasks(0)
    strat = strategy("query")
    plan = strat.plan(torch.Generator().manual_seed(0), tasks, 3)
    outer = apply_task(strat, plan, conv_encoder()[2], tasks, 1)
    assert outer.layer == 0
    torch.testing.assert_close(outer.h, tasks.query_x[1], rtol=0, atol=0)
    torch.testing.assert_close(outer.targets, tasks.soft_targets(tasks.query_y[1]), rtol=0, atol=0)


def test_cob_concatenates_support_then_query_at_the_inputs():
    tasks = make_tasks(0, support=1, query=3)
    strat = strategy("cob")
    plan = strat.plan(torch.Generator().manual_seed(0), tasks, 3)
    outer = apply_task(strat, plan, conv_encoder()[2], tasks, 2)
    assert outer.layer == 0 and outer.h.shape[0] == 2 + 6
    torch.testing.assert_close(outer.h[:2], tasks.support_x[2], rtol=0, atol=0)
    torch.testing.assert_close(outer.h[2:], tasks.query_x[2], rtol=0, atol=0)
    expected = torch.cat([tasks.support_y[2], tasks.query_y[2]])
    torch.testing.assert_close(outer.targets.argmax(-1), expected)


@pytest.mark.parametrize(
    ("name", "kept", "ignored"), [("mixup-qq", "query", "support"), ("mixup-ss", "support", "query")]
)
def test_self_mixup_never_mixes_across_support_and_query(name, kept, ignored):
    tasks = make_tasks(1, support=3, query=3)
    _, _, encode = conv_encoder()
    strat = strategy(name, layers=[1])
    plan = strat.plan(torch.Generator().manual_seed(0), tasks, 3)
    outer = apply_task(strat, plan, encode, tasks, 0)
    # Replacing the other set entirely changes nothing.
    other = {
        f"{ignored}_x": torch.randn_like(tasks.support_x) * 100,
        f"{ignored}_y": 1 - getattr(tasks, f"{ignored}_y"),
    }
    changed = apply_task(strat, plan, encode, replace(tasks, **other), 0)
    torch.testing.assert_close(changed.h, outer.h, rtol=0, atol=0)
    torch.testing.assert_close(changed.targets, outer.targets, rtol=0, atol=0)
    # Each sample is λ_j h_j + (1 − λ_j) h_perm(j) of its own set.
    h = encode(getattr(tasks, f"{kept}_x")[0], 1)
    t = tasks.soft_targets(getattr(tasks, f"{kept}_y")[0])
    perm, lam = plan.tensors["perm"][0], plan.tensors["lam"][0]
    assert sorted(perm.tolist()) == list(range(6))
    for j in range(6):
        torch.testing.assert_close(outer.h[j], lam[j] * h[j] + (1 - lam[j]) * h[perm[j]])
        torch.testing.assert_close(outer.targets[j], lam[j] * t[j] + (1 - lam[j]) * t[perm[j]])


# ------------------------------------------------------------------------------------------------ MetaMix family
@pytest.mark.parametrize("layer", [0, 1, 2])
@pytest.mark.parametrize("name", SUPPORT_QUERY_MIXING)
def test_lambda_one_gives_the_support_batch_and_zero_the_query_batch(name, layer):
    tasks = make_tasks(2, support=2, query=2)
    _, _, encode = conv_encoder()
    strat = strategy(name, layers=[layer])
    plan = strat.plan(torch.Generator().manual_seed(3), tasks, 3)
    assert plan.layer == (layer,) * tasks.n_tasks
    pair = plan.tensors["pair"][1]
    per_pair = plan.tensors["lam"].shape[2] if plan.tensors["lam"].dim() == 3 else 1
    support = apply_task(strat, with_tensor(plan, "lam", torch.ones_like(plan.tensors["lam"])), encode, tasks, 1)
    query = apply_task(strat, with_tensor(plan, "lam", torch.zeros_like(plan.tensors["lam"])), encode, tasks, 1)
    assert support.layer == query.layer == layer
    expected_support = encode(tasks.support_x[1], layer)[pair].repeat_interleave(per_pair, 0)
    expected_query = encode(tasks.query_x[1], layer).repeat_interleave(per_pair, 0)
    torch.testing.assert_close(support.h, expected_support, rtol=0, atol=0)
    torch.testing.assert_close(query.h, expected_query, rtol=0, atol=0)
    support_labels = tasks.support_y[1][pair].repeat_interleave(per_pair)
    torch.testing.assert_close(support.targets, tasks.soft_targets(support_labels), rtol=0, atol=0)
    query_labels = tasks.query_y[1].repeat_interleave(per_pair)
    torch.testing.assert_close(query.targets, tasks.soft_targets(query_labels), rtol=0, atol=0)


def test_metamix_at_a_hidden_layer_equals_a_hand_computation():
    tasks = make_tasks(4, n_way=None, support=5, query=5, x_shape=(3,))
    _, weights, encode = backbone_encoder("mlp", {"widths": [4, 4], "activation": "tanh"}, (3,), out_dim=2)
    strat = strategy("metamix", layers=[2], alpha=0.5, beta=0.5)
    plan = strat.plan(torch.Generator().manual_seed(5), tasks, 3)
    outer = apply_task(strat, plan, encode, tasks, 0)

    def by_hand(x: Tensor) -> Tensor:
        h = torch.tanh(x @ weights["blocks.0.1.weight"].T + weights["blocks.0.1.bias"])
        return torch.tanh(h @ weights["blocks.1.0.weight"].T + weights["blocks.1.0.bias"])

    hs, hq = by_hand(tasks.support_x[0]), by_hand(tasks.query_x[0])
    pair, lam = plan.tensors["pair"][0], plan.tensors["lam"][0]
    assert outer.h.shape == (5, 4) and outer.layer == 2
    for j in range(5):
        torch.testing.assert_close(outer.h[j], lam[j] * hs[pair[j]] + (1 - lam[j]) * hq[j])
        expected_target = lam[j] * tasks.support_y[0, pair[j]] + (1 - lam[j]) * tasks.query_y[0, j]
        torch.testing.assert_close(outer.targets[j], expected_target)


def test_metamix_mixes_images_with_one_lambda_per_sample_over_all_pixels():
    tasks = make_tasks(6, support=3, query=3)
    _, weights, encode = conv_encoder()
    strat = strategy("metamix", layers=[1])
    plan = strat.plan(torch.Generator().manual_seed(7), tasks, 3)
    outer = apply_task(strat, plan, encode, tasks, 2)

    def block_one(x: Tensor) -> Tensor:
        h = F.conv2d(x, weights["blocks.0.0.weight"], weights["blocks.0.0.bias"], padding=1)
        mean, var = h.mean(dim=(0, 2, 3), keepdim=True), h.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        h = (h - mean) / torch.sqrt(var + 1e-5)  # batch-norm scale 1 and shift 0 at initialisation
        return F.max_pool2d(F.relu(h), 2)

    hs, hq = block_one(tasks.support_x[2]), block_one(tasks.query_x[2])
    pair, lam = plan.tensors["pair"][2], plan.tensors["lam"][2]
    assert outer.h.shape == (6, 3, 4, 4)
    for j in range(6):
        torch.testing.assert_close(outer.h[j], lam[j] * hs[pair[j]] + (1 - lam[j]) * hq[j], atol=1e-5, rtol=1e-5)


def test_pairing_one_to_one_when_sizes_match_and_random_draws_when_the_support_is_smaller():
    metamix = strategy("metamix")
    rng = torch.Generator().manual_seed(8)
    equal = metamix.plan(rng, make_tasks(0, n_tasks=200, support=3, query=3, x_shape=(1,)), 2).tensors["pair"]
    assert all(sorted(row) == list(range(6)) for row in equal.tolist())
    assert (equal != torch.arange(6)).any(dim=1).float().mean() > 0.9  # shuffled, not index j with index j

    larger = metamix.plan(rng, make_tasks(0, n_tasks=200, support=4, query=2, x_shape=(1,)), 2).tensors["pair"]
    assert larger.shape == (200, 4) and all(len(set(row)) == 4 for row in larger.tolist())

    tasks = make_tasks(0, n_tasks=500, support=1, query=5, x_shape=(1,))  # K_s = 2 < K_q = 10
    smaller = metamix.plan(rng, tasks, 2).tensors["pair"]
    assert smaller.shape == (500, 10) and smaller.min() == 0 and smaller.max() == 1
    frequency = (smaller == 0).float().mean()
    assert abs(frequency - 0.5) < 0.02  # uniform over the support: std of the mean is 0.005
    ones = with_tensor(metamix.plan(rng, tasks, 2), "lam", torch.ones(500, 10))
    outer = apply_task(metamix, ones, lambda x, layer: x, tasks, 3)
    torch.testing.assert_close(outer.h, tasks.support_x[3][ones.tensors["pair"][3]], rtol=0, atol=0)


@pytest.mark.parametrize(("alpha", "beta"), [(2.0, 2.0), (2.0, 5.0), (0.5, 0.5), (0.2, 1.0)])
def test_empirical_mean_and_variance_of_lambda_match_the_beta_distribution(alpha, beta):
    tasks = make_tasks(0, n_tasks=2000, support=5, query=5, x_shape=(1,))
    lam = strategy("metamix", alpha=alpha, beta=beta).plan(torch.Generator().manual_seed(9), tasks, 2).tensors["lam"]
    assert lam.shape == (2000, 10) and lam.min() >= 0 and lam.max() <= 1
    total = alpha + beta
    mean, variance = alpha / total, alpha * beta / (total**2 * (total + 1))
    assert abs(lam.mean().item() - mean) < 4 * math.sqrt(variance / lam.numel())
    assert abs(lam.var().item() - variance) < 0.05 * variance


def test_tiny_beta_parameters_still_give_valid_weights():
    tasks = make_tasks(0, n_tasks=100, x_shape=(1,))
    lam = strategy("metamix", alpha=0.001, beta=0.001).plan(torch.Generator().manual_seed(0), tasks, 2).tensors["lam"]
    assert torch.isfinite(lam).all() and ((lam < 0.01) | (lam > 0.99)).float().mean() > 0.95


def test_layer_is_drawn_uniformly_from_the_candidates():
    tasks = make_tasks(0, n_tasks=1, x_shape=(1,))
    rng = torch.Generator().manual_seed(10)
    default = [strategy("metamix", layer_per="meta-batch").plan(rng, tasks, 4).layer for _ in range(400)]
    assert sorted(set(default)) == [0, 1, 2, 3] and min(default.count(layer) for layer in range(4)) > 60
    chosen = {strategy("mixup-qq", layers=[1, 3]).plan(rng, tasks, 4).layer for _ in range(50)}
    assert chosen == {(1,), (3,)}


@pytest.mark.parametrize("name", ["mixup-ss", "mixup-qq", *SUPPORT_QUERY_MIXING])
def test_one_layer_per_task_by_default_as_metamix_algorithm_1_line_7(name):
    tasks = make_tasks(0, n_tasks=400, x_shape=(1,))
    per_task = strategy(name).plan(torch.Generator().manual_seed(30), tasks, 4).layer
    assert isinstance(per_task, tuple) and len(per_task) == 400  # one independent uniform draw per task
    assert min(per_task.count(layer) for layer in range(4)) > 60
    shared = {
        strategy(name, layer_per="meta-batch").plan(torch.Generator().manual_seed(s), tasks, 4).layer for s in range(40)
    }
    assert all(isinstance(layer, int) for layer in shared) and shared == {0, 1, 2, 3}


def test_metamix_with_a_layer_per_task_mixes_each_task_at_its_own_layer_by_hand():
    tasks = make_tasks(31, n_tasks=6, n_way=None, support=4, query=4, x_shape=(3,))
    _, weights, encode = backbone_encoder("mlp", {"widths": [4, 4], "activation": "tanh"}, (3,), out_dim=2)
    strat = strategy("metamix", layers=[0, 2], alpha=0.5, beta=0.5)
    plan = strat.plan(torch.Generator().manual_seed(32), tasks, 3)
    assert set(plan.layer) == {0, 2}  # six tasks, two candidates: both occur with this seed

    def by_hand(x: Tensor, layer: int) -> Tensor:
        if layer == 0:
            return x
        h = torch.tanh(x @ weights["blocks.0.1.weight"].T + weights["blocks.0.1.bias"])
        return torch.tanh(h @ weights["blocks.1.0.weight"].T + weights["blocks.1.0.bias"])

    for index, layer in enumerate(plan.layer):
        outer = apply_task(strat, plan, encode, tasks, index)
        hs, hq = by_hand(tasks.support_x[index], layer), by_hand(tasks.query_x[index], layer)
        pair, lam = plan.tensors["pair"][index], plan.tensors["lam"][index]
        assert outer.layer == layer
        for j in range(4):
            torch.testing.assert_close(outer.h[j], lam[j] * hs[pair[j]] + (1 - lam[j]) * hq[j])


@pytest.mark.parametrize("name", MIXING)
def test_same_seed_same_mixed_batch_other_seed_another(name):
    tasks = make_tasks(11)
    _, _, encode = conv_encoder()
    strat = strategy(name, layers=[0, 1, 2])

    def mixed(seed: int) -> OuterBatch:
        plan = strat.plan(torch.Generator().manual_seed(seed), tasks, 3)
        return apply_task(strat, plan, encode, tasks, 0)

    first, again, other = mixed(12), mixed(12), mixed(13)
    assert first.layer == again.layer
    torch.testing.assert_close(first.h, again.h, rtol=0, atol=0)
    torch.testing.assert_close(first.targets, again.targets, rtol=0, atol=0)
    assert first.h.shape != other.h.shape or not torch.equal(first.h, other.h)


@pytest.mark.parametrize("name", ["query", "cob", *MIXING])
def test_apply_under_vmap_equals_a_loop_over_tasks(name):
    tasks = make_tasks(14)
    _, _, encode = conv_encoder()
    strat = strategy(name, **({"layer_per": "meta-batch"} if name in MIXING and name != "multimix" else {}))
    plan = strat.plan(torch.Generator().manual_seed(15), tasks, 3)
    support_t, query_t = tasks.soft_targets(tasks.support_y), tasks.soft_targets(tasks.query_y)

    def one_task(tensors, support_x, support_t, query_x, query_t):
        outer = strat.apply(MixPlan(plan.layer, tensors), encode, support_x, support_t, query_x, query_t)
        return outer.h, outer.targets

    h, targets = vmap(one_task)(plan.tensors, tasks.support_x, support_t, tasks.query_x, query_t)
    for index in range(tasks.n_tasks):
        outer = apply_task(strat, plan, encode, tasks, index)
        torch.testing.assert_close(h[index], outer.h, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(targets[index], outer.targets)


# ------------------------------------------------------------------------------------------------ MultiMix, multi-mix
def test_multimix_combines_all_support_and_query_embeddings_with_dirichlet_weights():
    tasks = make_tasks(16, support=1, query=2)  # m = 2 + 4 = 6 samples per task
    _, _, encode = conv_encoder()
    strat = strategy("multimix", layers=[2])
    plan = strat.plan(torch.Generator().manual_seed(17), tasks, 3)
    weights = plan.tensors["weights"]
    assert weights.shape == (3, 24, 6)  # n defaults to 4 (K_s + K_q)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 24))
    outer = apply_task(strat, plan, encode, tasks, 1)
    h = torch.cat([encode(tasks.support_x[1], 2), encode(tasks.query_x[1], 2)])
    t = tasks.soft_targets(torch.cat([tasks.support_y[1], tasks.query_y[1]]))
    for k in range(24):
        torch.testing.assert_close(outer.h[k], sum(weights[1, k, i] * h[i] for i in range(6)))
        torch.testing.assert_close(outer.targets[k], sum(weights[1, k, i] * t[i] for i in range(6)))
    assert strategy("multimix", n=7).plan(torch.Generator(), tasks, 3).tensors["weights"].shape == (3, 7, 6)


def test_multimix_with_m_combines_a_random_subset_of_m_points_by_hand():
    tasks = make_tasks(33, support=1, query=2)  # 6 points per task
    _, _, encode = conv_encoder()
    strat = strategy("multimix", layers=[2], m=2, n=50)
    weights = strat.plan(torch.Generator().manual_seed(34), tasks, 3).tensors["weights"]
    assert weights.shape == (3, 50, 6)
    assert ((weights > 0).sum(-1) == 2).all()  # exactly m points per mixed sample
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 50))
    chosen = (weights > 0).float().mean((0, 1))
    assert (chosen > 0.15).all()  # every point takes part (expected 2/6 each)
    plan = strat.plan(torch.Generator().manual_seed(34), tasks, 3)
    outer = apply_task(strat, plan, encode, tasks, 2)
    h = torch.cat([encode(tasks.support_x[2], 2), encode(tasks.query_x[2], 2)])
    t = tasks.soft_targets(torch.cat([tasks.support_y[2], tasks.query_y[2]]))
    for k in range(50):
        i, j = (weights[2, k] > 0).nonzero().squeeze(1).tolist()
        torch.testing.assert_close(outer.h[k], weights[2, k, i] * h[i] + weights[2, k, j] * h[j])
        torch.testing.assert_close(outer.targets[k], weights[2, k, i] * t[i] + weights[2, k, j] * t[j])
    full = strategy("multimix", m=None).plan(torch.Generator().manual_seed(34), tasks, 3).tensors["weights"]
    assert (full > 0).all()  # the paper's default m = b: every point in every combination


def test_multimix_clean_query_appends_the_query_samples_unmixed():
    tasks = make_tasks(35, support=1, query=2)  # K_s = 2, K_q = 4
    _, _, encode = conv_encoder()
    strat = strategy("multimix", layers=[1], n=5, clean_query=True)
    plan = strat.plan(torch.Generator().manual_seed(36), tasks, 3)
    assert plan.tensors["weights"].shape == (3, 5 + 4, 6)
    outer = apply_task(strat, plan, encode, tasks, 0)
    torch.testing.assert_close(outer.h[5:], encode(tasks.query_x[0], 1), rtol=0, atol=0)
    torch.testing.assert_close(outer.targets[5:], tasks.soft_targets(tasks.query_y[0]), rtol=0, atol=0)
    plain = strategy("multimix", layers=[1], n=5).plan(torch.Generator().manual_seed(36), tasks, 3)
    torch.testing.assert_close(plan.tensors["weights"][:, :5], plain.tensors["weights"], rtol=0, atol=0)


def test_multimix_concentration_range_shapes_the_weights():
    tasks = make_tasks(0, n_tasks=200, support=2, query=2, x_shape=(1,))
    rng = torch.Generator().manual_seed(18)

    def spread(low: float, high: float) -> float:
        weights = strategy("multimix", alpha_low=low, alpha_high=high).plan(rng, tasks, 2).tensors["weights"]
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:2]))
        return weights.max(-1).values.mean().item()

    assert spread(0.05, 0.05) > 0.8 > 0.3 > spread(50.0, 50.0)  # concentrated weights pick one sample, spread ones many


def test_multi_mix_draws_k_ordered_lambdas_per_pair():
    tasks = make_tasks(19, support=2, query=2)
    _, _, encode = conv_encoder()
    strat = strategy("multi-mix", k=4, layers=[1])
    plan = strat.plan(torch.Generator().manual_seed(20), tasks, 3)
    lam, pair = plan.tensors["lam"], plan.tensors["pair"]
    assert lam.shape == (3, 4, 4) and pair.shape == (3, 4)
    assert (lam[..., 1:] > lam[..., :-1]).all()
    outer = apply_task(strat, plan, encode, tasks, 0)
    assert outer.h.shape[0] == 16
    hs, hq = encode(tasks.support_x[0], 1), encode(tasks.query_x[0], 1)
    for j in range(4):
        for k in range(4):
            expected = lam[0, j, k] * hs[pair[0, j]] + (1 - lam[0, j, k]) * hq[j]
            torch.testing.assert_close(outer.h[4 * j + k], expected)


# ------------------------------------------------------------------------------------------------ MetaMixUp
def lookahead_heldout_loss(strat, tasks: TaskBatch, heldout: str, inner_lr: float = 0.1) -> Callable[[MixPlan], Tensor]:
    """A learner's held-out loss for a linear model y = w·x from w = 0: one step on the mixed batch, then the MSE on
    the ``heldout`` set after that lookahead step."""

    def loss(plan: MixPlan) -> Tensor:
        total = torch.zeros(())
        for index in range(tasks.n_tasks):
            outer = apply_task(strat, plan, lambda x, layer: x, tasks, index)
            w = torch.zeros(1, requires_grad=True)
            inner = (outer.h * w - outer.targets).square().mean()
            (gradient,) = torch.autograd.grad(inner, w, create_graph=True)
            fast = w - inner_lr * gradient
            x, y = getattr(tasks, f"{heldout}_x")[index], getattr(tasks, f"{heldout}_y")[index]
            total = total + (x * fast - y).square().mean()
        return total / tasks.n_tasks

    return loss


def slope_tasks() -> TaskBatch:
    """Support points on y = 3x, query points on y = −x, at one x per task (like the paper's toy proof, App. A.3): the
    more a mix weighs one set, the more a step on it moves the slope toward that set's."""
    x = torch.tensor([1.0, 2.0]).view(2, 1, 1).expand(2, 4, 1)
    return TaskBatch(x, 3 * x, x, -x, None)


@pytest.mark.parametrize(("heldout", "direction"), [("query", -1), ("support", 1)])
def test_metamixup_moves_lambda_in_the_direction_that_lowers_the_heldout_loss(heldout, direction):
    tasks = slope_tasks()
    strat = strategy("metamixup", lambda_lr=0.5, alpha=2.0, beta=2.0)
    plan = strat.plan(torch.Generator().manual_seed(22), tasks, 1)
    loss = lookahead_heldout_loss(strat, tasks, heldout)
    refined = strat.refine(plan, loss)
    step = refined.tensors["lam"] - plan.tensors["lam"]
    assert (torch.sign(step) == direction).all()  # λ weighs the support: a held-out query pulls it down
    assert loss(refined) < loss(plan)
    assert not refined.tensors["lam"].requires_grad
    assert refined.layer == plan.layer and torch.equal(refined.tensors["pair"], plan.tensors["pair"])


def test_metamixup_step_on_a_task_does_not_depend_on_the_meta_batch_size():
    tasks = slope_tasks()
    strat = strategy("metamixup", lambda_lr=0.5)
    plan = strat.plan(torch.Generator().manual_seed(22), tasks, 1)
    both = strat.refine(plan, lookahead_heldout_loss(strat, tasks, "query")).tensors["lam"]
    first_plan = MixPlan(plan.layer, {name: value[:1] for name, value in plan.tensors.items()})
    first = strat.refine(first_plan, lookahead_heldout_loss(strat, tasks.select(0), "query")).tensors["lam"]
    torch.testing.assert_close(both[:1], first)


def test_metamixup_clips_lambda_to_the_unit_interval():
    tasks = slope_tasks()
    strat = strategy("metamixup", lambda_lr=1e6)
    plan = strat.plan(torch.Generator().manual_seed(23), tasks, 1)
    assert (strat.refine(plan, lookahead_heldout_loss(strat, tasks, "query")).tensors["lam"] == 0).all()
    assert (strat.refine(plan, lookahead_heldout_loss(strat, tasks, "support")).tensors["lam"] == 1).all()


@pytest.mark.parametrize("name", ["query", "cob", "mixup-ss", "mixup-qq", "metamix", "multimix", "multi-mix"])
def test_other_strategies_keep_their_plan(name):
    tasks = make_tasks(24)
    strat = strategy(name)
    plan = strat.plan(torch.Generator().manual_seed(25), tasks, 3)
    assert strat.refine(plan, lambda p: pytest.fail("a fixed plan needs no held-out loss")) is plan


# ------------------------------------------------------------------------------------------------ with the learners
def tiny_setups():
    """(backbone name, params, input shape, tasks): an mlp on flat inputs and a small conv4 on 8x8 images, 2-way
    1-shot with 2 queries per class."""
    return [
        ("mlp", {"widths": [8, 8]}, (4,), make_tasks(26, n_tasks=2, support=1, query=2, x_shape=(4,))),
        ("conv4", {"filters": 4, "blocks": 2}, (1, 8, 8), make_tasks(27, n_tasks=2, support=1, query=2)),
    ]


@pytest.mark.parametrize("strategy_name", default_registry().names("strategy"))
@pytest.mark.parametrize("learner_name", default_registry().names("learner"))
def test_every_learner_and_strategy_pair_runs_a_meta_step_or_is_declared_incompatible(learner_name, strategy_name):
    registry = default_registry()
    learner = registry.build("learner", learner_name, {}, where="test")
    strat = strategy(strategy_name)
    reason = learner.incompatible(strat, strategy_name, "classification")
    if reason is not None:
        assert isinstance(reason, str) and reason.strip()
        return
    for backbone_name, params, input_shape, tasks in tiny_setups():
        backbone = registry.build("backbone", backbone_name, params, where="test", input_shape=input_shape, out_dim=2)
        meta_params = learner.init_params(backbone, torch.Generator().manual_seed(28))
        loss, metrics = learner.meta_loss(meta_params, tasks, strat, torch.Generator().manual_seed(29))
        assert loss.dim() == 0 and torch.isfinite(loss), (backbone_name, loss)
        if learner.meta_trains:
            gradients = torch.autograd.grad(loss, list(meta_params.values()), allow_unused=True)
            present = [g for g in gradients if g is not None]
            assert present and all(torch.isfinite(g).all() for g in present)
            assert any(g.abs().sum() > 0 for g in present), (backbone_name, "no meta-gradient")
        assert all(math.isfinite(value) for value in metrics.values())
