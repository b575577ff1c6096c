"""The compiled path (``metabench run --compile``): the per-task meta-gradient under ``torch.compile`` against finite
differences and the eager vmap path, one graph for every built-in learner, the eager fallback, and run identity.

Compiled numbers are not bit-exact: Inductor reorders and fuses the float64 sums (compiled and eager MAML gradients
differed by 3e-15 at most when measured), so the compiled path is held to a relative 1e-9 against eager, and to the
eager tests' 1e-5 against finite differences. One Inductor compile cache serves the whole session: the first compile
pays (about a minute on a loaded two-core machine), later ones of the same graph read the cache."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_float32 as float32
import torch
import torch.nn.functional as F
from benchmark_files import run, write_benchmark
from test_learners import build, image_tasks, meta_gradient

from metabench import config, provenance, results
from metabench.cache import use_compile_cache
from metabench.plugins.backbones import pooling
from metabench.registry import default_registry
from metabench.runspec import RunSpec

F64 = torch.float64
# One conv block of four filters on 8x8 images, two tasks: the smallest network with a convolution and batch norm.
CONV = {"backbone": "conv4", "backbone_params": {"filters": 4, "blocks": 1}, "input_shape": (1, 8, 8), "out_dim": 3}
MAML = {"inner_steps": 1, "inner_lr": 0.3}
FALLBACK = "learner .*: torch.compile failed"  # the warning of a fallback to eager


@pytest.fixture(scope="session", autouse=True)
def compile_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One Inductor/AOTAutograd cache folder for the session (``use_compile_cache`` keeps a set
    ``TORCHINDUCTOR_CACHE_DIR``)."""
    folder = tmp_path_factory.mktemp("torch-compile")
    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    assert use_compile_cache() == folder
    yield folder
    if before is None:
        del os.environ["TORCHINDUCTOR_CACHE_DIR"]
    else:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = before


def compiled_learner(name: str, options: dict, *, backbone_class: type | None = None, **context):
    """A learner bound to a float64 backbone with its meta-gradient compiled, and its meta-parameters."""
    learner = build("learner", name, {**options, "vectorize": "loop"})
    net = build("backbone", context.pop("backbone"), context.pop("backbone_params"), **context).to(F64)
    if backbone_class is not None:
        net.__class__ = backbone_class
    params = learner.init_params(net, torch.Generator().manual_seed(0))
    torch._dynamo.reset()  # as the runner does before each compiled run: one learner's graphs per test
    learner.compile_meta_gradient(name)
    return learner, params


def eager_learner(name: str, options: dict, vectorize: str = "vmap", **context):
    learner = build("learner", name, {**options, "vectorize": vectorize})
    net = build("backbone", context.pop("backbone"), context.pop("backbone_params"), **context).to(F64)
    return learner, learner.init_params(net, torch.Generator().manual_seed(0))


def flat(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads.values()])


def tiny_tasks():
    return image_tasks(n_tasks=2, shape=(1, 8, 8))


def test_compiled_second_order_meta_gradient_matches_a_finite_difference():
    tasks = tiny_tasks()
    learner, params = compiled_learner("maml", MAML, **CONV)
    name, index, eps = "blocks.0.0.weight", (1, 0, 0, 1), 1e-6
    with warnings.catch_warnings():
        warnings.filterwarnings("error", FALLBACK)  # this must compile
        analytic = meta_gradient(learner, params, tasks)[name][index]
    assert learner._compiled.seconds  # the compiled graph ran

    def loss_at(shift):
        moved = {k: v.detach().clone() for k, v in params.items()}
        moved[name][index] += shift
        return float(learner.meta_loss(moved, tasks, build("strategy", "query"), torch.Generator().manual_seed(0))[0])

    numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    assert abs(analytic) > 1e-4
    assert float(analytic) == pytest.approx(numeric, rel=1e-5)


def test_compiled_loop_and_eager_vmap_give_the_same_meta_gradient():
    # The same graph as the finite-difference test: read from the session's compile cache.
    tasks = tiny_tasks()
    compiled, params = compiled_learner("maml", MAML, **CONV)
    eager, eager_params = eager_learner("maml", MAML, **CONV)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", FALLBACK)
        for step in range(2):  # the second step reuses the first one's graph
            loop = flat(meta_gradient(compiled, params, tasks, seed=step))
    vmap = flat(meta_gradient(eager, eager_params, tasks, seed=1))
    assert len(compiled._compiled.seconds) == 1
    assert loop.norm() > 0
    assert (loop - vmap).norm() / vmap.norm() < 1e-9


def test_compiled_pooling_runs_the_eager_kernel_outside_torch_func_and_inductors_inside():
    # Images of few grey levels tie inside most windows: the gradient must go to the first maximum, as eagerly.
    images = torch.randint(0, 3, (3, 4, 7, 6), generator=torch.Generator().manual_seed(0)).to(F64)
    images = images.contiguous(memory_format=torch.channels_last).requires_grad_()
    weights = torch.randn(3, 4, 3, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    graphs: list[str] = []

    def record(graph, example_inputs):
        graphs.append(graph.print_readable(print_output=False))
        return graph.forward

    def pooled_loss(x):
        return (pooling.max_pool_2x2(x) * weights).sum()

    eager = torch.autograd.grad((F.max_pool2d(images, 2) * weights).sum(), images)[0]
    for backend in (record, "inductor"):
        compiled = torch.autograd.grad(torch.compile(pooled_loss, backend=backend, fullgraph=True)(images), images)[0]
        assert torch.equal(compiled, eager)
        inner = torch.compile(torch.func.grad(pooled_loss), backend=backend, fullgraph=True)(images.detach())
        assert torch.equal(inner, eager)
        torch._dynamo.reset()
    assert "metabench.max_pool_2x2" in graphs[0]  # the kernel, opaque to Inductor
    assert "metabench.max_pool_2x2" not in graphs[1]  # its gradient would not be differentiable under torch.func


BUILT_IN = [("maml", MAML), ("fomaml", MAML), ("anil", MAML), ("metasgd", MAML), ("tnet", MAML), ("protonet", {})]


@pytest.mark.parametrize(("name", "options"), BUILT_IN)
def test_every_built_in_gradient_learner_compiles_to_one_graph(name, options, monkeypatch):
    # fullgraph: a graph break fails the compile, which warns and runs eager. Dynamo and AOTAutograd trace as under
    # Inductor; the aot_eager backend skips Inductor's C++ code generation (minutes for six graphs), not the tracing.
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    tasks = tiny_tasks()
    learner, params = compiled_learner(name, options, **CONV)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", FALLBACK)
        compiled = flat(meta_gradient(learner, params, tasks))
    eager, eager_params = eager_learner(name, options, vectorize="loop", **CONV)
    reference = flat(meta_gradient(eager, eager_params, tasks))
    assert learner._compiled.seconds
    assert (compiled - reference).norm() / reference.norm() < 1e-9


TRACED_GRAPHS = """
import functools, hashlib, torch
from test_compiled import BUILT_IN, CONV, compiled_learner, tiny_tasks
from test_learners import meta_gradient
codes = []
def record(graph, example_inputs, options=None):
    codes.append(graph.code)
    return graph.forward
torch.compile = functools.partial(torch.compile, backend=record)
for name, options in BUILT_IN:
    learner, params = compiled_learner(name, options, **CONV)
    meta_gradient(learner, params, tiny_tasks())
print(len(codes), hashlib.sha256("".join(codes).encode()).hexdigest())
"""


def test_every_built_in_learner_traces_the_same_graph_in_every_process():
    # The compile cache is keyed by the traced graph: a graph that depends on the process's string-hash seed (a set
    # of parameter names iterated) misses the cache in every new process and compiles again (issue 25).
    def traced(hash_seed: str) -> str:
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(Path(__file__).parent)}
        done = subprocess.run([sys.executable, "-c", TRACED_GRAPHS], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    first = traced("1")
    assert first.startswith(f"{len(BUILT_IN)} ")  # one graph per learner, none broken
    assert traced("2") == first


def test_a_backbone_that_cannot_compile_runs_eager_after_one_warning():
    mlp = type(build("backbone", "mlp", {}, input_shape=(1, 8, 8), out_dim=3))

    class Breaking(mlp):
        """An MLP with an explicit graph break: what an op Dynamo cannot trace in a plugin does."""

        def forward(self, h, start=0, stop=None):
            torch._dynamo.graph_break()
            return super().forward(h, start, stop)

    backbone = {"backbone": "mlp", "backbone_params": {}, "input_shape": (1, 8, 8), "out_dim": 3}
    tasks = tiny_tasks()
    learner, params = compiled_learner("maml", MAML, backbone_class=Breaking, **backbone)
    with pytest.warns(UserWarning) as caught:
        grads = [flat(meta_gradient(learner, params, tasks, seed=step)) for step in range(2)]
    messages = [str(w.message) for w in caught if "torch.compile" in str(w.message)]
    assert len(messages) == 1, messages
    assert messages[0].startswith("learner 'maml': torch.compile failed, running eager: ")
    assert "\n" not in messages[0]
    eager, eager_params = eager_learner("maml", MAML, vectorize="loop", **backbone)
    assert torch.equal(grads[0], flat(meta_gradient(eager, eager_params, tasks)))  # eager: bit-identical


@pytest.mark.parametrize("data", sorted(float32.TASKS))
def test_compiled_float32_meta_gradient_is_within_rounding_of_float64(data, capsys):
    # Inductor writes its own batch-norm reductions: they must round no worse than the eager kernels do
    # (tests/test_float32.py's bounds and nudged tasks, one inner step of MAML against the eager float64 meta-gradient).
    options = {"inner_steps": 1, "inner_lr": 0.4, "vectorize": "loop"}
    real_build = float32.build

    def compiled_build(kind, name, params=None, **context):
        component = real_build(kind, name, params, **context)
        if kind == "learner":
            torch._dynamo.reset()
            component.compile_meta_gradient(name)
        return component

    errors = []
    for tasks in float32.nudged(data):
        exact = float32.meta_gradient("maml", options, "query", tasks, torch.float64)
        with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
            warnings.filterwarnings("error", FALLBACK)
            patch.setattr(float32, "build", compiled_build)
            compiled = float32.meta_gradient("maml", options, "query", tasks, torch.float32)
        assert "learner 'maml': per-task meta-gradient compiled in" in capsys.readouterr().err
        errors.append(float32.relative_error(compiled, exact))
    assert max(errors) < float32.BOUNDS[data], f"relative errors {errors}, bound {float32.BOUNDS[data]}"


# ------------------------------------------------------------------------------------------------------ identity
def test_an_eager_records_identity_is_unchanged_and_a_compiled_run_is_another():
    registry = default_registry()
    found = results.read_records(Path(__file__).parents[1] / "results")
    assert found
    for path, record in found:  # the config hash, a record's file name, knows nothing of compiling
        assert RunSpec.from_dict(record["config"]).config_hash == path.stem
        assert "compiled" not in record["provenance"]
    record = found[0][1]
    spec = RunSpec.from_dict(record["config"])
    eager = provenance.of(spec, registry, "cpu")
    compiled = provenance.of(spec, registry, "cpu", compiled=True)
    assert eager == provenance.of(spec, registry, "cpu", compiled=False) and "compiled" not in eager
    assert provenance.code_hash(compiled) != provenance.code_hash(eager)
    assert "compiled False -> True" in provenance.differences(eager, compiled)


def test_the_compile_key_is_an_execution_option_out_of_the_config_hash(fakes, tmp_path, capsys):
    plain = write_benchmark(tmp_path / "plain.toml", "fake")
    keyed = write_benchmark(tmp_path / "keyed.toml", "fake", {"training.compile": True})
    hashes = [s.config_hash for s in config.load_benchmark(plain, fakes)]
    assert [s.config_hash for s in config.load_benchmark(keyed, fakes)] == hashes
    assert config.compile_key(keyed, fakes) and not config.compile_key(plain, fakes)
    assert config.compile_key(plain, fakes, overrides=["training.compile=true"])

    # A compiled record is stale to an eager run (and the other way round): compiled numbers are not eager ones.
    out = tmp_path / "out"
    assert run(keyed, "--out", out, "--no-progress") == 0
    assert "learner 'fake-learner' has no compiled path" in capsys.readouterr().err
    record = results.load_record(out, config.load_benchmark(plain, fakes)[0])
    assert record["provenance"]["compiled"] is True
    assert run(plain, "--out", out, "--dry-run") == 0
    assert "stale" in capsys.readouterr().out
    assert run(plain, "--out", out, "--dry-run", "--compile") == 0
    assert "2 runs: all recorded" in capsys.readouterr().out
