"""The plugin host as a plugin author meets it: real pip-installed packages, the registry's messages, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

import metabench
from metabench import ConfigError, DuplicateComponentError, Param, Registry
from metabench.cli import main


def _write_plugin_package(root: Path, dist: str, module: str, body: str, version: str = "0.3.1") -> Path:
    package = root / dist
    (package / module).mkdir(parents=True)
    (package / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = ["setuptools>=61"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "{dist}"
            version = "{version}"

            [project.entry-points.metabench]
            {module} = "{module}"

            [tool.setuptools]
            packages = ["{module}"]
            """
        )
    )
    (package / module / "__init__.py").write_text(textwrap.dedent(body))
    return package


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args], check=True)


def _metabench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "metabench.cli", *args], capture_output=True, text=True)


STRATEGY_PLUGIN = """
    from metabench import hookimpl, Param, OuterBatch, MixPlan, parameters


    @parameters(Param("fraction", float, 0.5, "share of the query set kept", low=0.0, high=1.0))
    class HalfQuery:
        '''Outer loss on the first half of the query set (a throwaway strategy for the tests).'''

        plain = False

        def __init__(self, fraction):
            self.fraction = fraction

        def plan(self, rng, tasks, n_layers):
            return MixPlan(0, {})

        def apply(self, plan, encode, support_x, support_t, query_x, query_t):
            keep = max(1, int(len(query_x) * self.fraction))
            return OuterBatch(query_x[:keep], query_t[:keep], 0)

        def refine(self, plan, heldout_loss):
            return plan


    @hookimpl
    def metabench_register_strategies(register):
        register("half-query", HalfQuery, summary="Outer loss on a fraction of the query set.")
    """


@pytest.fixture(scope="module")
def installed_plugins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Three throwaway distributions: a working plugin, one that fails to import, and one that clashes."""
    root = tmp_path_factory.mktemp("plugins")
    packages = {
        "metabench-halfquery": _write_plugin_package(root, "metabench-halfquery", "mb_halfquery", STRATEGY_PLUGIN),
        "metabench-broken": _write_plugin_package(
            root, "metabench-broken", "mb_broken", "import a_module_that_does_not_exist\n", version="1.0.0"
        ),
    }
    _pip("install", "--no-build-isolation", "--no-deps", *map(str, packages.values()))
    try:
        yield
    finally:
        _pip("uninstall", "-y", *packages)


def test_installed_plugin_is_listed_with_its_provider(installed_plugins: None) -> None:
    result = _metabench("plugins", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    ours = [r for r in rows if r["name"] == "half-query"]
    assert ours == [
        {
            "kind": "strategy",
            "name": "half-query",
            "provider": "metabench-halfquery",
            "version": "0.3.1",
            "summary": "Outer loss on a fraction of the query set.",
            "status": "ok",
        }
    ]


def test_installed_plugin_is_described(installed_plugins: None) -> None:
    result = _metabench("describe", "strategy", "half-query")
    assert result.returncode == 0, result.stderr
    assert "metabench-halfquery 0.3.1" in result.stdout
    assert "fraction" in result.stdout and "[0.0, 1.0]" in result.stdout and "0.5" in result.stdout


def test_broken_plugin_warns_and_is_listed_but_the_rest_works(installed_plugins: None) -> None:
    result = _metabench("plugins")
    assert result.returncode == 0
    assert "mb_broken" in result.stderr and "No module named 'a_module_that_does_not_exist'" in result.stderr
    broken_rows = [line for line in result.stdout.splitlines() if "metabench-broken" in line]
    assert len(broken_rows) == 1 and broken_rows[0].startswith("BROKEN") and "metabench-broken 1.0.0" in broken_rows[0]
    assert "half-query" in result.stdout


def test_duplicate_names_name_both_providers(tmp_path: Path) -> None:
    clash = _write_plugin_package(tmp_path, "metabench-clash", "mb_clash", STRATEGY_PLUGIN, version="2.0.0")
    first = _write_plugin_package(tmp_path, "metabench-halfquery2", "mb_halfquery2", STRATEGY_PLUGIN)
    _pip("install", "--no-build-isolation", "--no-deps", str(clash), str(first))
    try:
        result = _metabench("plugins")
    finally:
        _pip("uninstall", "-y", "metabench-clash", "metabench-halfquery2")
    assert result.returncode == 2
    assert "strategy 'half-query' is registered twice" in result.stderr
    assert "metabench-clash 2.0.0" in result.stderr and "metabench-halfquery2 0.3.1" in result.stderr


def _module_plugin(name: str, register_hook: str, components: dict[str, list[Param]]) -> types.ModuleType:
    module = types.ModuleType(name)

    def register_all(register) -> None:
        for component, params in components.items():
            register(component, metabench.parameters(*params)(lambda **kw: kw), summary=f"{component} for tests")

    setattr(module, register_hook, metabench.hookimpl(register_all))
    return module


def test_duplicate_in_process_plugins_are_refused() -> None:
    one = _module_plugin("plugin_one", "metabench_register_learners", {"twin": []})
    two = _module_plugin("plugin_two", "metabench_register_learners", {"twin": []})
    with pytest.raises(DuplicateComponentError, match="plugin_one.*plugin_two|plugin_two.*plugin_one"):
        Registry.load([one, two], entry_points=False)


@pytest.fixture
def registry() -> Registry:
    params = [
        Param("inner_lr", float, 0.4, "inner learning rate", low=0.0),
        Param("inner_steps", int, 1, "inner steps", low=1, high=100),
        Param("order", str, "second", "gradient order", choices=("first", "second")),
        Param("layers", list, None, "mixable layers", item_type=int, nullable=True, low=0),
    ]
    plugin = _module_plugin("toy_plugin", "metabench_register_learners", {"toy-maml": params, "toy-anil": []})
    return Registry.load([plugin], entry_points=False)


def test_unknown_name_lists_available_and_a_close_match(registry: Registry) -> None:
    with pytest.raises(ConfigError) as error:
        registry.build("learner", "toy-mamll", {}, where="bench.toml: grid.learners[0]")
    message = str(error.value)
    assert message.startswith("bench.toml: grid.learners[0]: unknown learner 'toy-mamll'")
    assert "did you mean 'toy-maml'?" in message and "available: toy-anil, toy-maml" in message


def test_unknown_parameter_names_component_and_source(registry: Registry) -> None:
    with pytest.raises(ConfigError) as error:
        registry.build("learner", "toy-maml", {"inner_lrr": 0.1}, where="bench.toml: learners.toy-maml")
    message = str(error.value)
    assert "bench.toml: learners.toy-maml" in message and "'toy-maml' has no parameter 'inner_lrr'" in message
    assert "did you mean 'inner_lr'?" in message


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"inner_lr": "fast"}, "parameter 'inner_lr' = 'fast': expected float, got str"),
        ({"inner_lr": -1}, "parameter 'inner_lr' = -1: must be >= 0.0"),
        ({"inner_steps": 2.5}, "parameter 'inner_steps' = 2.5: expected int, got float"),
        ({"inner_steps": True}, "parameter 'inner_steps' = True: expected int, got bool"),
        ({"inner_steps": 101}, "parameter 'inner_steps' = 101: must be <= 100"),
        ({"order": "third"}, "parameter 'order' = 'third': must be one of 'first', 'second'"),
        ({"layers": [0, -2]}, "parameter 'layers' = [0, -2]: must be >= 0"),
    ],
)
def test_bad_values_name_component_parameter_value_and_source(registry: Registry, params: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        registry.build("learner", "toy-maml", params, where="bench.toml: learners.toy-maml")
    assert str(error.value) == f"bench.toml: learners.toy-maml: learner 'toy-maml' {expected}"


def test_build_resolves_defaults_converts_ints_and_accepts_none(registry: Registry) -> None:
    built = registry.build("learner", "toy-maml", {"inner_lr": 1, "layers": "none"})
    assert built == {"inner_lr": 1.0, "inner_steps": 1, "order": "second", "layers": None}
    assert isinstance(built["inner_lr"], float)


def test_cli_reports_unknown_component_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["describe", "learner", "no-such-learner"]) == 2
    assert "error: unknown learner 'no-such-learner'" in capsys.readouterr().err
