"""The documentation stays true: every hook and every built-in component is documented, the built-ins use only the
public plugin API, and the README's plugin example works as written."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from plugin_packages import installed, write_plugin_package

from metabench import hookspecs
from metabench.registry import KINDS, Registry, default_registry
from metabench.tasks import TaskBatch

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_MODULES = {"metabench", "metabench.interfaces"}


def test_every_hook_has_a_docstring_and_every_kind_a_registration_hook() -> None:
    hooks = {name: fn for name, fn in vars(hookspecs).items() if name.startswith("metabench_")}
    assert set(KINDS.values()) <= set(hooks)
    for name, fn in hooks.items():
        assert len(inspect.getdoc(fn) or "") > 40, f"hook {name} needs a docstring"


def test_every_built_in_component_and_parameter_is_documented() -> None:
    registry = Registry.load()
    built_in = [spec for spec in registry.specs() if spec.provider.distribution == "metabench"]
    assert {spec.kind for spec in built_in} == set(KINDS)
    for spec in built_in:
        assert spec.summary.strip(), f"{spec.kind} '{spec.name}' needs a summary"
        assert inspect.getdoc(spec.factory), f"{spec.kind} '{spec.name}': its factory needs a docstring"
        for param in spec.params:
            assert len(param.doc.strip()) > 3, f"{spec.kind} '{spec.name}' parameter '{param.name}' needs a doc"


def test_built_in_plugins_import_only_the_public_api() -> None:
    offenders = []
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("metabench"):
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names if alias.name.startswith("metabench")]
            else:
                continue
            offenders += [
                f"{path.relative_to(ROOT)}:{node.lineno} imports {module}"
                for module in modules
                if module not in PUBLIC_MODULES and not module.startswith("metabench.plugins")
            ]
    assert not offenders, "\n".join(offenders)


def _readme_plugin(heading: str = "## Write your own plugin") -> tuple[str, str, str]:
    """The README's plugin example under ``heading``: its code, its entry point name and module."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split(heading, 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    entry = re.search(r'\[project\.entry-points\.metabench\]\s+([\w-]+) = "(\w+)"', code)
    return code, entry.group(1), entry.group(2)


def _readme_package(tmp_path: Path, heading: str, dist: str) -> tuple[Path, str]:
    """The README's plugin example under ``heading`` as the distribution ``dist``; its package and module name."""
    code, entry_name, module = _readme_plugin(heading)
    package = write_plugin_package(tmp_path, dist, module, code, version="0.1.0")
    # the README names the entry point itself; the helper names it after the module
    pyproject = package / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(f'{module} = "{module}"', f'{entry_name} = "{module}"'))
    return package, module


def test_the_readme_plugin_example_installs_lists_and_runs(tmp_path: Path) -> None:
    package, _ = _readme_package(tmp_path, "## Write your own plugin", "my-plugin")
    with installed(tmp_path, package):
        listing = subprocess.run(
            [sys.executable, "-m", "metabench.cli", "plugins", "--kind", "strategy", "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        rows = {row["name"]: row for row in json.loads(listing.stdout)}
        assert rows["noisy-query"]["provider"] == "my-plugin" and rows["noisy-query"]["status"] == "ok"
        grid = 'learners = ["maml"]\nstrategies = ["query", { name = "noisy-query", params = { sigma = 0.5 } }]\n'
        records = _run_tiny_sine_grid(tmp_path, grid, diagnostic_tasks=0)
        assert sorted(r["config"]["strategy"]["name"] for r in records) == ["noisy-query", "query"]
        assert all(r["status"] == "ok" for r in records)


def _run_tiny_sine_grid(tmp_path: Path, grid: str, diagnostic_tasks: int) -> list[dict]:
    """Run a two-step sinusoid benchmark whose ``[grid]`` lists ``grid`` (learners, strategies) through the CLI in a
    fresh interpreter; its records."""
    bench = tmp_path / "tiny.toml"
    bench.write_text(
        '[dataset]\nname = "sinusoid"\n[backbone]\nname = "mlp"\nparams = { widths = [8] }\n'
        "[protocol]\nn_way = 2\nk_shot = 4\nk_query = 4\neval_tasks = 4\nval_tasks = 2\n"
        "[training]\nmeta_steps = 2\nmeta_batch = 2\nvalidate_every = 2\ncheckpoint_every = 2\n"
        f'diagnostic_tasks = {diagnostic_tasks}\n[grid]\nsamplers = ["standard"]\n{grid}'
    )
    run = subprocess.run(
        [sys.executable, "-m", "metabench.cli", "run", str(bench), "--out", str(tmp_path / "out"), "--no-progress"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    return [json.loads(p.read_text()) for p in (tmp_path / "out" / "runs").glob("*.json")]


def _first_order_meta_gradient_and_finite_difference(learner_module, vectorize: str) -> tuple[float, float]:
    """The README learner's meta-gradient of one conv weight, and the central difference of the query losses at the
    adapted weights along it: first order, the adapted weights move with the initialisation one for one."""
    f64, registry = torch.float64, default_registry()
    backbone = registry.build("backbone", "conv4", {"filters": 4}, where="test", input_shape=(1, 16, 16), out_dim=3).to(
        f64
    )
    learner = learner_module.FirstOrderMaml(inner_lr=0.3, vectorize=vectorize)
    params = learner.init_params(backbone, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).expand(3, -1).contiguous()
    tasks = TaskBatch(
        torch.randn(3, 3, 1, 16, 16, generator=g, dtype=f64),
        labels,
        torch.randn(3, 3, 1, 16, 16, generator=g, dtype=f64),
        labels,
        3,
    )
    strategy = registry.build("strategy", "query", {}, where="test")
    loss, _ = learner.meta_loss(params, tasks, strategy, torch.Generator().manual_seed(0))
    name, index, eps = "blocks.1.0.weight", (1, 2, 0, 1), 1e-6
    analytic = float(torch.autograd.grad(loss, params[name])[0][index])
    task_loss, support_t, query_t = (
        learner_module.learning.task_loss(tasks),
        tasks.soft_targets(tasks.support_y),
        tasks.soft_targets(tasks.query_y),
    )
    init = {k: v.detach() for k, v in params.items()}
    fast = [learner.inner.adapt(init, tasks.support_x[i], support_t[i], task_loss, 1, True) for i in range(3)]

    def query_loss_at(shift: float) -> float:
        total = 0.0
        for i, weights in enumerate(fast):
            moved = {k: v.clone() for k, v in weights.items()}
            moved[name][index] += shift
            total += float(task_loss(learner.network(moved, tasks.query_x[i]), query_t[i]))
        return total / 3

    return analytic, (query_loss_at(eps) - query_loss_at(-eps)) / (2 * eps)


def test_the_readme_learner_runs_in_a_grid_and_its_meta_gradient_is_first_order_maml(tmp_path: Path) -> None:
    code, _, _ = _readme_plugin("## Writing a learner")
    assert len(code.strip().splitlines()) < 40
    package, module = _readme_package(tmp_path, "## Writing a learner", "fo-maml")
    with installed(tmp_path, package):
        grid = 'learners = ["fo-maml"]\nstrategies = ["query", "metamix"]\n'
        records = _run_tiny_sine_grid(tmp_path, grid, diagnostic_tasks=2)
        assert sorted(r["config"]["strategy"]["name"] for r in records) == ["metamix", "query"]
        assert all(r["status"] == "ok" and r["config"]["learner"]["name"] == "fo-maml" for r in records)
    spec = importlib.util.spec_from_file_location(module, package / module / "__init__.py")
    learner_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(learner_module)
    for vectorize in ("loop", "vmap"):
        analytic, numeric = _first_order_meta_gradient_and_finite_difference(learner_module, vectorize)
        assert abs(analytic) > 1e-4
        assert analytic == pytest.approx(numeric, rel=1e-6), vectorize


@pytest.mark.parametrize("path", sorted((ROOT / "harness").glob("*.py")), ids=lambda p: p.name)
def test_every_host_module_says_what_it_is_for(path: Path) -> None:
    assert ast.get_docstring(ast.parse(path.read_text())), f"{path.name} needs a module docstring"
