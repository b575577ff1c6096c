"""Meta-learners: meta-gradients against closed forms and finite differences, vmap vs loop, learning a sinusoid."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
import torch
from torch.func import functional_call

from metabench.plugins.learners.diagnostics import top_singular_value
from metabench.registry import default_registry
from metabench.tasks import TaskBatch

F64 = torch.float64


def build(kind: str, name: str, params: dict | None = None, **context):
    return default_registry().build(kind, name, params or {}, where="test", **context)


def bound(learner_name: str, learner_params: dict | None = None, *, backbone="mlp", backbone_params=None, **context):
    """A learner bound to a float64 backbone, and its meta-parameters."""
    learner = build("learner", learner_name, learner_params)
    net = build("backbone", backbone, backbone_params, **context).to(F64)
    return learner, learner.init_params(net, torch.Generator().manual_seed(0))


def meta_gradient(learner, params, tasks, strategy="query", seed=0) -> dict[str, torch.Tensor]:
    loss, metrics = learner.meta_loss(params, tasks, build("strategy", strategy), torch.Generator().manual_seed(seed))
    assert metrics["loss"] == pytest.approx(float(loss.detach()))
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {name: torch.zeros_like(p) if g is None else g for (name, p), g in zip(params.items(), grads, strict=True)}


def regression_tasks(n_tasks=3, n_support=5, n_query=7, dim=2, seed=0) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_tasks, n_support + n_query, dim, generator=g, dtype=F64)
    y = x @ torch.randn(n_tasks, dim, 1, generator=g, dtype=F64) + 0.3 * torch.randn(
        n_tasks, n_support + n_query, 1, generator=g, dtype=F64
    )
    return TaskBatch(x[:, :n_support], y[:, :n_support], x[:, n_support:], y[:, n_support:], None)


def image_tasks(n_tasks=3, n_way=3, k_shot=1, k_query=2, shape=(1, 16, 16), seed=0) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_way)
    support_y = labels.repeat_interleave(k_shot).expand(n_tasks, -1).contiguous()
    query_y = labels.repeat_interleave(k_query).expand(n_tasks, -1).contiguous()
    support_x = torch.randn(n_tasks, n_way * k_shot, *shape, generator=g, dtype=F64)
    query_x = torch.randn(n_tasks, n_way * k_query, *shape, generator=g, dtype=F64)
    return TaskBatch(support_x, support_y, query_x, query_y, n_way)


# ------------------------------------------------------------------------- closed forms on a linear-regression model
# The mlp without hidden layers is y = w·x + b: with features x̃ = [x, 1] and θ = [w, b], the MSE L(θ) has gradient
# (2/n) X̃ᵀ(X̃θ − y) and Hessian (2/n) X̃ᵀX̃.
LINEAR = {"backbone_params": {"widths": []}, "input_shape": (2,), "out_dim": 1}
MU = 0.05


def features(x):
    return torch.cat([x, torch.ones(*x.shape[:-1], 1, dtype=x.dtype)], -1)


def grad_mse(theta, x, y):
    design = features(x)
    return 2 / len(x) * design.T @ (design @ theta - y[:, 0])


def hessian_mse(x):
    design = features(x)
    return 2 / len(x) * design.T @ design


def theta_of(params):
    return torch.cat([params["head.weight"].flatten(), params["head.bias"]]).detach()


def flat_head(grads):
    return torch.cat([grads["head.weight"].flatten(), grads["head.bias"]])


def adapted_theta(theta, tasks, task):
    return theta - MU * grad_mse(theta, tasks.support_x[task], tasks.support_y[task])


def test_maml_meta_gradient_equals_the_closed_form():
    tasks = regression_tasks()
    learner, params = bound("maml", {"inner_lr": MU}, **LINEAR)
    theta = theta_of(params)
    expected = torch.stack(
        [
            (torch.eye(3, dtype=F64) - MU * hessian_mse(tasks.support_x[t]))
            @ grad_mse(adapted_theta(theta, tasks, t), tasks.query_x[t], tasks.query_y[t])
            for t in range(tasks.n_tasks)
        ]
    ).mean(0)
    torch.testing.assert_close(flat_head(meta_gradient(learner, params, tasks)), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("name", "options"), [("fomaml", {}), ("maml", {"first_order": True})])
def test_first_order_meta_gradient_is_the_query_gradient_at_the_adapted_weights(name, options):
    tasks = regression_tasks()
    learner, params = bound(name, {"inner_lr": MU, **options}, **LINEAR)
    theta = theta_of(params)
    expected = torch.stack(
        [grad_mse(adapted_theta(theta, tasks, t), tasks.query_x[t], tasks.query_y[t]) for t in range(tasks.n_tasks)]
    ).mean(0)
    torch.testing.assert_close(flat_head(meta_gradient(learner, params, tasks)), expected, rtol=1e-10, atol=1e-12)


def test_metasgd_inner_learning_rates_receive_their_closed_form_gradient():
    tasks = regression_tasks()
    learner, params = bound("metasgd", {"inner_lr": MU}, **LINEAR)
    maml, maml_params = bound("maml", {"inner_lr": MU}, **LINEAR)
    grads = meta_gradient(learner, params, tasks)
    # With every rate at MU the initialisation's meta-gradient is MAML's ...
    torch.testing.assert_close(flat_head(grads), flat_head(meta_gradient(maml, maml_params, tasks)))
    # ... and d L_q(θ − α ⊙ g_s) / dα = −g_s ⊙ ∇L_q(φ).
    theta = theta_of(params)
    expected = torch.stack(
        [
            -grad_mse(theta, tasks.support_x[t], tasks.support_y[t])
            * grad_mse(adapted_theta(theta, tasks, t), tasks.query_x[t], tasks.query_y[t])
            for t in range(tasks.n_tasks)
        ]
    ).mean(0)
    lr_grads = torch.cat([grads["inner_lr.head.weight"].flatten(), grads["inner_lr.head.bias"]])
    assert lr_grads.abs().min() > 0
    torch.testing.assert_close(lr_grads, expected, rtol=1e-10, atol=1e-12)


def test_reptile_meta_gradient_points_from_the_adapted_weights_to_the_initialisation():
    tasks = regression_tasks()
    learner, params = bound("reptile", {"inner_lr": MU, "inner_steps": 1}, **LINEAR)
    theta = theta_of(params)
    # θ − mean_t φ_t with φ_t = θ − µ ∇L_s,t(θ).
    expected = MU * torch.stack([grad_mse(theta, tasks.support_x[t], tasks.support_y[t]) for t in range(3)]).mean(0)
    torch.testing.assert_close(flat_head(meta_gradient(learner, params, tasks)), expected, rtol=1e-10, atol=1e-12)


def test_anil_adapts_only_the_head():
    tasks = regression_tasks()
    learner, params = bound("anil", {"inner_lr": MU}, backbone_params={"widths": [6]}, input_shape=(2,), out_dim=1)
    fast = learner.adapt_all(params, tasks, steps=2, first_order=False)
    assert set(fast) == {"head.weight", "head.bias"}
    assert not torch.allclose(fast["head.weight"][0], params["head.weight"])
    # The body is meta-learned only: it still receives a meta-gradient through the adapted head.
    assert meta_gradient(learner, params, tasks)["blocks.0.1.weight"].abs().sum() > 0


@pytest.mark.parametrize("transform_at", ["conv", "block"])
def test_tnet_transforms_act_where_transform_at_says(transform_at):
    learner, params = bound("tnet", {"transform_at": transform_at}, **CONV)
    g = torch.Generator().manual_seed(1)
    for name in [n for n in params if n.startswith("transform.")]:
        params[name] = params[name] + 0.3 * torch.randn(params[name].shape, generator=g, dtype=F64)

    def channels(h, transform):
        return torch.einsum("oc,bc...->bo...", transform, h)

    x = h = image_tasks().support_x[0]
    for block in range(4):
        w, b = params[f"blocks.{block}.0.weight"], params[f"blocks.{block}.0.bias"]
        h = torch.nn.functional.conv2d(h, w, b, padding=1)
        if transform_at == "conv":  # Lee & Choi's code: right after the convolution, before normalisation
            h = channels(h, params[f"transform.{block + 1}"])
        h = torch.nn.functional.batch_norm(
            h, None, None, params[f"blocks.{block}.1.weight"], params[f"blocks.{block}.1.bias"], training=True
        )
        h = torch.nn.functional.max_pool2d(h.relu(), 2)
        if transform_at == "block":
            h = channels(h, params[f"transform.{block + 1}"])
    out = torch.nn.functional.linear(h.flatten(1), params["head.weight"], params["head.bias"])
    if transform_at == "conv":  # and after the output layer
        out = channels(out, params["transform.5"])
    expected_names = {f"transform.{i}" for i in range(1, 6 if transform_at == "conv" else 5)}
    assert {n for n in params if n.startswith("transform.")} == expected_names
    torch.testing.assert_close(learner.network(params, x), out)
    for layer in range(1, 5):  # the mixable layers compose to the whole forward
        torch.testing.assert_close(learner.network(params, learner.network(params, x, 0, layer), layer), out)


# ---------------------------------------------------------------------------------------------- vmap vs per-task loop
CONV = {"backbone": "conv4", "backbone_params": {"filters": 4}, "input_shape": (1, 16, 16), "out_dim": 3}
PAIRS = [
    ("maml", "query"),
    ("maml", "metamix"),
    ("maml", "metamixup"),
    ("fomaml", "metamix"),
    ("anil", "query"),
    ("metasgd", "query"),
    ("tnet", "metamix"),
    ("tnet", "query"),
    ("protonet", "metamix"),
    ("protonet", "metamixup"),
]


@pytest.mark.parametrize(("learner_name", "strategy"), PAIRS)
def test_vmap_and_loop_give_the_same_meta_gradient(learner_name, strategy):
    tasks = image_tasks()
    options = {} if learner_name == "protonet" else {"inner_steps": 2, "inner_lr": 0.3}
    grads = {}
    for path in ("vmap", "loop"):
        learner, params = bound(learner_name, {**options, "vectorize": path}, **CONV)
        grads[path] = torch.cat([g.flatten() for g in meta_gradient(learner, params, tasks, strategy).values()])
    assert grads["loop"].norm() > 0
    assert (grads["vmap"] - grads["loop"]).norm() / grads["loop"].norm() < 1e-6


@pytest.mark.parametrize(("strategy", "path"), [("query", "loop"), ("metamix", "loop"), ("query", "vmap")])
def test_second_order_meta_gradient_matches_a_finite_difference(strategy, path):
    # The loop path runs native batch norm on channels-last images, the vmap path batch norm from primitives.
    tasks = image_tasks()
    learner, params = bound("maml", {"inner_steps": 2, "inner_lr": 0.3, "vectorize": path}, **CONV)
    name, index, eps = "blocks.1.0.weight", (1, 2, 0, 1), 1e-6
    analytic = meta_gradient(learner, params, tasks, strategy)[name][index]

    def loss_at(shift):
        moved = {k: v.detach().clone() for k, v in params.items()}
        moved[name][index] += shift
        return float(learner.meta_loss(moved, tasks, build("strategy", strategy), torch.Generator().manual_seed(0))[0])

    numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    assert abs(analytic) > 1e-4
    assert float(analytic) == pytest.approx(numeric, rel=1e-5)


@pytest.mark.parametrize("learner_name", ["maml", "protonet"])
def test_evaluate_is_per_task_builds_no_graph_and_agrees_across_paths(learner_name):
    tasks = image_tasks(n_tasks=4)
    scores = {}
    for path in ("vmap", "loop"):
        learner, params = bound(learner_name, {"vectorize": path}, **CONV)
        scores[path] = learner.evaluate(params, tasks)
    whole = scores["loop"]
    assert set(whole) == {"pre", "post", "train_pre", "train_post"}
    first, rest = (
        learner.evaluate(params, tasks.select(slice(0, 1))),
        learner.evaluate(params, tasks.select(slice(1, 4))),
    )
    for key, value in whole.items():
        assert value.shape == (4,) and not value.requires_grad
        assert ((value >= 0) & (value <= 1)).all()
        torch.testing.assert_close(value, scores["vmap"][key])
        torch.testing.assert_close(value, torch.cat([first[key], rest[key]]))


class RefineSpy:
    """Wraps a strategy and records the held-out loss a learner hands to ``refine``, before and after refining."""

    plain = False

    def __init__(self, strategy):
        self.strategy = strategy

    def plan(self, rng, tasks, n_layers):
        return self.strategy.plan(rng, tasks, n_layers)

    def apply(self, plan, encode, support_x, support_t, query_x, query_t):
        return self.strategy.apply(plan, encode, support_x, support_t, query_x, query_t)

    def refine(self, plan, heldout_loss):
        refined = self.strategy.refine(plan, heldout_loss)
        self.lambdas = plan.tensors["lam"], refined.tensors["lam"]
        self.losses = float(heldout_loss(plan)), float(heldout_loss(refined))
        return refined


@pytest.mark.parametrize("learner_name", ["maml", "protonet"])
def test_learned_lambda_step_lowers_the_heldout_loss_the_learner_provides(learner_name):
    learner, params = bound(learner_name, **CONV)
    spy = RefineSpy(build("strategy", "metamixup", {"lambda_lr": 0.05}))
    learner.meta_loss(params, image_tasks(), spy, torch.Generator().manual_seed(0))
    before, after = spy.lambdas
    assert not torch.allclose(before, after)
    assert spy.losses[1] < spy.losses[0]


class DifferentiablePlan(RefineSpy):
    """MetaMix whose refined λ is a leaf that wants its own gradient from the outer loss."""

    def refine(self, plan, heldout_loss):
        self.lam = plan.tensors["lam"].detach().clone().requires_grad_()
        return replace(plan, tensors={**plan.tensors, "lam": self.lam})


def test_a_differentiable_plan_gets_the_same_gradients_on_both_paths():
    grads = {}
    for path in ("vmap", "loop"):
        learner, params = bound("maml", {"vectorize": path}, **CONV)
        strategy = DifferentiablePlan(build("strategy", "metamix"))
        loss, _ = learner.meta_loss(params, image_tasks(), strategy, torch.Generator().manual_seed(0))
        loss.backward()
        grads[path] = torch.cat([strategy.lam.grad.flatten(), *(p.grad.flatten() for p in params.values())])
    assert grads["loop"][:3].abs().min() > 0
    assert torch.allclose(grads["vmap"], grads["loop"], rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("path", ["loop", "vmap"])
def test_a_refining_strategy_and_the_outer_loss_share_one_adaptation_per_task(path):
    learner, params = bound("maml", {"vectorize": path}, **CONV)
    tasks, calls = image_tasks(), []
    adapt = learner.adapter(tasks, 1, first_order=False)

    def counted(shared, support):
        calls.append(support[0].shape)
        return adapt(shared, support)

    objective = learner.objective(build("strategy", "metamixup"), tasks)
    objective.meta_loss(params, counted, tasks, torch.Generator().manual_seed(0)).backward()
    assert len(calls) == (tasks.n_tasks if path == "loop" else 1)
    assert all(p.grad is not None for p in params.values())


def test_the_per_task_loop_returns_a_loss_to_differentiate_once():
    learner, params = bound("maml", {"vectorize": "loop"}, **CONV)
    strategy = build("strategy", "query")
    loss, _ = learner.meta_loss(params, image_tasks(), strategy, torch.Generator().manual_seed(0))
    with torch.no_grad():
        again, _ = learner.meta_loss(params, image_tasks(), strategy, torch.Generator().manual_seed(0))
    assert float(loss.detach()) == pytest.approx(float(again), rel=1e-12)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params.values())


# -------------------------------------------------------------------------------------------------------- ProtoNets
@pytest.mark.parametrize("embed_episode", ["joint", "separate"])
def test_protonet_loss_is_cross_entropy_of_distances_to_prototypes(embed_episode):
    tasks = image_tasks(k_shot=2)
    learner, params = bound("protonet", {"embed_episode": embed_episode}, **CONV)
    net = build("backbone", "conv4", {"filters": 4}, input_shape=(1, 16, 16), out_dim=3).to(F64)
    losses = []
    for t in range(tasks.n_tasks):
        if embed_episode == "joint":  # one batch: batch norm's statistics are the whole episode's (Snell et al.)
            both = functional_call(net, params, (torch.cat([tasks.support_x[t], tasks.query_x[t]]),), {"stop": 4})
            support, query = both[:6], both[6:]
        else:
            support = functional_call(net, params, (tasks.support_x[t],), {"stop": 4})
            query = functional_call(net, params, (tasks.query_x[t],), {"stop": 4})
        prototypes = support.view(3, 2, -1).mean(1)  # labels are 0,0,1,1,2,2
        logits = -torch.cdist(query, prototypes).square()
        losses.append(torch.nn.functional.cross_entropy(logits, tasks.query_y[t]))
    loss, _ = learner.meta_loss(params, tasks, build("strategy", "query"), torch.Generator())
    torch.testing.assert_close(loss, torch.stack(losses).mean())


def test_protonet_joint_embedding_joins_support_and_mixed_batch_at_the_mixing_layer():
    tasks = image_tasks(k_shot=2)
    learner, params = bound("protonet", **CONV)
    support_x, h = tasks.support_x[0], torch.randn(4, 4, 8, 8, dtype=F64)  # a batch at mixable layer 1
    net = build("backbone", "conv4", {"filters": 4}, input_shape=(1, 16, 16), out_dim=3).to(F64)
    support_h = functional_call(net, params, (support_x,), {"stop": 1})
    both = functional_call(net, params, (torch.cat([support_h, h]),), {"start": 1, "stop": 4})
    support, embeddings = learner.embed_episode(params, support_x, h, 1)
    torch.testing.assert_close(support, both[:6])
    torch.testing.assert_close(embeddings, both[6:])


def test_protonet_declines_regression_tasks():
    learner = build("learner", "protonet")
    reason = learner.incompatible(build("strategy", "query"), "query", "regression")
    assert reason is not None and "classification" in reason
    assert learner.incompatible(build("strategy", "query"), "query", "classification") is None


# ------------------------------------------------------------------------------------------ compatibility, diagnostics
@pytest.mark.parametrize(("name", "word"), [("reptile", "Reptile"), ("scratch", "scratch")])
def test_learners_without_an_outer_query_loss_accept_only_the_plain_strategy(name, word):
    learner = build("learner", name)
    assert learner.incompatible(build("strategy", "query"), "query", "classification") is None
    reason = learner.incompatible(build("strategy", "metamix"), "metamix", "classification")
    assert word in reason and "metamix" in reason
    assert build("learner", "maml").incompatible(build("strategy", "metamix"), "metamix", "classification") is None


def test_top_singular_value_is_per_class_svd():
    g = torch.Generator().manual_seed(0)
    representations, labels = torch.randn(7, 5, generator=g, dtype=F64), torch.tensor([0, 1, 0, 2, 1, 0, 2])
    expected = torch.stack([torch.linalg.svdvals(representations[labels == c])[0] for c in range(3)]).mean()
    targets = torch.nn.functional.one_hot(labels, 3).to(F64)
    torch.testing.assert_close(top_singular_value(representations, targets), expected)


def test_diagnostics_report_the_metamix_analyses():
    learner, params = bound("maml", {"inner_lr": 0.3}, **CONV)
    found = learner.diagnostics(params, image_tasks())
    assert set(found) == {"grad_norm_support", "grad_norm_query", "top_singular_value"}
    assert all(value > 0 for value in found.values())
    learner, params = bound("maml", {"inner_lr": MU}, **LINEAR)
    assert set(learner.diagnostics(params, regression_tasks())) == {"grad_norm_support", "grad_norm_query"}


# --------------------------------------------------------------------------------------------------------- learning
def test_maml_learns_sinusoids_better_than_training_from_scratch():
    started = time.perf_counter()
    family = build("dataset", "sinusoid").split("train")
    rng, cpu = torch.Generator().manual_seed(0), torch.device("cpu")
    net = build("backbone", "mlp", input_shape=(1,), out_dim=1)
    maml = build("learner", "maml", {"inner_lr": 0.01, "inner_steps": 1})
    params = maml.init_params(net, torch.Generator().manual_seed(0))
    optimiser = torch.optim.Adam(params.values(), lr=3e-3)
    query = build("strategy", "query")
    for _ in range(500):
        loss, _ = maml.meta_loss(params, family.sample(10, 10, 10, rng, cpu), query, rng)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    tests = family.sample(100, 10, 20, torch.Generator().manual_seed(1), cpu)
    scores = {key: float(value.mean()) for key, value in maml.evaluate(params, tests).items()}
    scratch = build("learner", "scratch")
    assert not scratch.meta_trains
    from_scratch = float(
        scratch.evaluate(scratch.init_params(net, torch.Generator().manual_seed(0)), tests)["post"].mean()
    )
    assert scores["post"] < 0.6 * scores["pre"]
    assert scores["post"] < 0.6 * from_scratch
    assert time.perf_counter() - started < 60  # a budget for the suite, generous for a shared machine
