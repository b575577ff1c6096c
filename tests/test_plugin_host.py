"""The plugin host as a plugin author meets it: real pip-installed packages, the registry's messages, the CLI."""

from __future__ import annotations

import json
import types
import warnings
from collections.abc import Iterator

import pytest
from benchmark_files import metabench_process, write_benchmark
from plugin_packages import installed, write_plugin_package

import metabench
from metabench import ConfigError, DuplicateComponentError, Param, Registry
from metabench.cli import main

# Two runs of three meta-steps, validated and checkpointed once each.
TINY = {
    "benchmark.name": None,
    "protocol.eval_tasks": 4,
    "training.meta_steps": 3,
    "training.validate_every": 3,
    "training.checkpoint_every": 3,
    "training.diagnostic_tasks": 0,
    "grid.seeds": [0, 1],
}


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


def _register_strategy(hook_line: str = "def metabench_register_strategies(register):", body: str = "") -> str:
    return f"""
    from metabench import hookimpl, Param, parameters

    {body}

    @hookimpl
    {hook_line}
        register("twin", lambda: None, summary="A strategy whose name another plugin uses too.")
    """


FAILING_REPORTER = """
    from metabench import hookimpl


    @hookimpl
    def metabench_step_finished(spec, step, metrics):
        raise RuntimeError("tracker unreachable")
"""

BAD_PARAMS = """
    from metabench import hookimpl, Param, parameters


    @parameters(Param("sigma", float, "wide", "a default of the wrong type"))
    def noisy(*, sigma):
        return sigma


    @hookimpl
    def metabench_register_strategies(register):
        register("noisy", noisy, summary="declares a bad parameter")
"""

BROKEN_PLUGINS = {
    # distribution: (module body, what `metabench plugins` must say about it)
    "metabench-broken": ("import a_module_that_does_not_exist\n", "No module named 'a_module_that_does_not_exist'"),
    "metabench-exits": ("import sys\nsys.exit(3)\n", "SystemExit: 3"),
    "metabench-raises": (
        _register_strategy(
            body="",
            hook_line="def metabench_register_strategies(register):\n        raise "
            "RuntimeError('registration exploded')",
        ),
        "metabench_register_strategies raised RuntimeError: registration exploded",
    ),
    "metabench-signature": (
        _register_strategy(hook_line="def metabench_register_strategies(register, colour):"),
        "invalid hook implementation",
    ),
    "metabench-misspelt": (
        _register_strategy(hook_line="def metabench_register_strategy(register):"),
        "unknown hook 'metabench_register_strategy' (did you mean 'metabench_register_strategies'?)",
    ),
    "metabench-badparams": (BAD_PARAMS, "parameter 'sigma': the default is invalid"),
}


@pytest.fixture(scope="module")
def installed_plugins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Throwaway distributions: a working strategy, a reporter that raises, two that register the same name, and one
    for each way a plugin can be broken."""
    root = tmp_path_factory.mktemp("plugins")
    bodies = {
        "metabench-halfquery": STRATEGY_PLUGIN,
        "metabench-reporter": FAILING_REPORTER,
        "metabench-twin-a": _register_strategy(),
        "metabench-twin-b": _register_strategy(),
        **{dist: body for dist, (body, _) in BROKEN_PLUGINS.items()},
    }
    packages = [
        write_plugin_package(root, dist, "mb_" + dist.removeprefix("metabench-").replace("-", "_"), body, "1.0.0")
        for dist, body in bodies.items()
    ]
    with installed(root, *packages):
        yield


def test_installed_plugin_is_listed_with_its_provider(installed_plugins: None) -> None:
    result = metabench_process("plugins", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    ours = [r for r in rows if r["name"] == "half-query"]
    assert ours == [
        {
            "kind": "strategy",
            "name": "half-query",
            "provider": "metabench-halfquery",
            "version": "1.0.0",
            "summary": "Outer loss on a fraction of the query set.",
            "status": "ok",
        }
    ]


def test_installed_plugin_is_described_with_where_it_is_defined(installed_plugins: None) -> None:
    result = metabench_process("describe", "strategy", "half-query")
    assert result.returncode == 0, result.stderr
    assert "metabench-halfquery 1.0.0" in result.stdout
    assert "fraction" in result.stdout and "[0.0, 1.0]" in result.stdout and "0.5" in result.stdout
    assert "defined at: mb_halfquery.HalfQuery (" in result.stdout and "mb_halfquery/__init__.py:" in result.stdout


def test_every_broken_plugin_is_listed_and_warned_about_and_the_rest_works(installed_plugins: None) -> None:
    result = metabench_process("plugins", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    broken = {r["provider"]: r for r in rows if r["status"] == "broken"}
    for dist, (_, reason) in BROKEN_PLUGINS.items():
        assert dist in broken, f"{dist} not listed as broken"
        assert reason in broken[dist]["summary"] and broken[dist]["version"] == "1.0.0"
        assert dist in result.stderr
    assert {r["name"] for r in rows if r["status"] == "ok"} >= {"half-query", "maml", "metamix", "omniglot"}
    assert "noisy" not in {r["name"] for r in rows if r["status"] == "ok"}
    table = metabench_process("plugins")
    assert table.returncode == 0 and any(line.startswith("BROKEN") for line in table.stdout.splitlines())


def test_a_name_registered_twice_is_a_conflict_that_fails_only_benchmarks_using_it(installed_plugins, tmp_path) -> None:
    listing = json.loads(metabench_process("plugins", "--json", "--kind", "strategy").stdout)
    (twin,) = [r for r in listing if r["name"] == "twin"]
    assert twin["status"] == "conflict" and "metabench-twin-a 1.0.0" in twin["summary"]
    assert "metabench-twin-b 1.0.0" in twin["summary"]

    bench = write_benchmark(tmp_path / "twin.toml", "omniglot", {**TINY, "grid.strategies": ["query", "twin"]})
    result = metabench_process("run", str(bench), "--out", str(tmp_path / "out"), "--no-progress")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "grid.strategies[1]" in result.stderr and "strategy 'twin' is registered twice" in result.stderr
    assert "metabench-twin-a 1.0.0" in result.stderr and "metabench-twin-b 1.0.0" in result.stderr
    assert not (tmp_path / "out" / "runs").exists()


def test_a_failing_lifecycle_hook_warns_once_per_run_naming_its_plugin(installed_plugins, tmp_path) -> None:
    bench = write_benchmark(tmp_path / "tiny.toml", "omniglot", TINY)
    result = metabench_process("run", str(bench), "--out", str(tmp_path / "out"), "--no-progress", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if "tracker unreachable" in line]
    assert len(warned) == 2  # two runs of three meta-steps each: one warning per run
    assert all("metabench-reporter" in line and "metabench_step_finished" in line for line in warned)


def _module_plugin(name: str, register_hook: str, components: dict[str, list[Param]]) -> types.ModuleType:
    module = types.ModuleType(name)

    def register_all(register) -> None:
        for component, params in components.items():
            register(component, metabench.parameters(*params)(lambda **kw: kw), summary=f"{component} for tests")

    setattr(module, register_hook, metabench.hookimpl(register_all))
    return module


def test_in_process_plugins_registering_one_name_conflict() -> None:
    one = _module_plugin("plugin_one", "metabench_register_learners", {"twin": [], "single": []})
    two = _module_plugin("plugin_two", "metabench_register_learners", {"twin": []})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a conflict is listed and fails its users; loading itself is quiet
        registry = Registry.load([one, two], entry_points=False)
    assert registry.names("learner") == ["single"]
    with pytest.raises(DuplicateComponentError, match="plugin_one.*plugin_two|plugin_two.*plugin_one"):
        registry.get("learner", "twin", where="bench.toml: grid.learners[0]")


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ([Param("lr", float, "fast", "doc")], "'lr': the default is invalid"),
        ([Param("lr", float, -1.0, "doc", low=0.0)], "'lr': the default is invalid"),
        ([Param("lr", float, 0.5, "doc", low=1.0, high=0.0)], "low = 1.0 > high = 0.0"),
        ([Param("lr", float, 0.1, "doc"), Param("lr", float, 0.2, "doc")], "'lr' is declared twice"),
        (["lr"], "'lr' is not a metabench.Param"),
        ([Param("learning rate", float, 0.1, "doc")], "'learning rate' is not an identifier"),
        ([Param("a/b", float, 0.1, "doc")], "'a/b' is not an identifier"),
        ([Param("lr", float, float("nan"), "doc", low=0.0)], "'lr': the default is invalid"),
    ],
)
def test_invalid_parameter_declarations_break_only_their_plugin(params: list, reason: str) -> None:
    bad = _module_plugin("bad_plugin", "metabench_register_learners", {"bad": params})
    good = _module_plugin("good_plugin", "metabench_register_learners", {"good": []})
    with pytest.warns(RuntimeWarning, match="bad_plugin"):
        registry = Registry.load([bad, good], entry_points=False)
    assert registry.names("learner") == ["good"]
    (broken,) = registry.broken
    assert broken.provider.distribution == "bad_plugin" and reason in broken.error


def test_component_names_with_a_slash_or_space_are_refused() -> None:
    bad = _module_plugin("slashy", "metabench_register_strategies", {"mix/up": []})
    with pytest.warns(RuntimeWarning, match="slashy"):
        registry = Registry.load([bad], entry_points=False)
    assert registry.names("strategy") == [] and "'mix/up'" in registry.broken[0].error


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


class _Ordered:
    """A throwaway reporter plugin: notes each step it hears of in ``log``, with its hook options."""

    def __init__(self, name: str, log: list[str], fail: bool = False, **options: bool):
        self.__name__ = name  # the plugin's name in the registry

        def metabench_step_finished(step):
            log.append(name)
            if fail:
                raise RuntimeError(f"{name} failed")

        self.metabench_step_finished = metabench.hookimpl(**options)(metabench_step_finished)


class _Wrapper:
    """A new-style wrapper around every other implementation of ``metabench_step_finished``; can fail after it."""

    def __init__(self, log: list[str], fail_after: bool = False):
        self.log, self.fail_after = log, fail_after

    @metabench.hookimpl(wrapper=True)
    def metabench_step_finished(self, step):
        self.log.append("wrapper before")
        result = yield
        self.log.append("wrapper after")
        if self.fail_after:
            raise RuntimeError("wrapper failed after its yield")
        return result


class _OldWrapper:
    @metabench.hookimpl(hookwrapper=True)
    def metabench_step_finished(self, step):
        raise RuntimeError("old-style wrapper failed before its yield")
        yield


def test_lifecycle_hooks_keep_pluggys_order_and_wrappers_and_a_raising_one_only_warns(tmp_path) -> None:
    from test_runner import options, registry_with, spec

    from metabench.executor import SequentialExecutor

    log: list[str] = []
    plugins = [
        _Ordered("last", log, trylast=True),
        _Ordered("first", log, tryfirst=True),
        _Ordered("plain, registered first", log),
        _Ordered("plain, registered last, raises", log, fail=True),
        _Wrapper(log, fail_after=True),
        _OldWrapper(),
    ]
    with pytest.warns(RuntimeWarning) as warned:
        [record] = SequentialExecutor(registry_with(*plugins)).run([spec(steps=2)], options(tmp_path))
    assert record["status"] == "ok"
    # pluggy's order: wrappers around the rest; tryfirst, then the others last registered first, then trylast
    one_step = [
        "wrapper before",
        "first",
        "plain, registered last, raises",
        "plain, registered first",
        "last",
        "wrapper after",
    ]
    assert log == one_step * 2
    messages = sorted(str(w.message).split(": ", 1)[1] for w in warned if "raised in" in str(w.message))
    assert len(messages) == 3  # once per plugin and run, not once per step
    assert any("old-style wrapper failed before its yield" in m for m in messages)
    assert any("wrapper failed after its yield" in m for m in messages)
    assert any("plain, registered last, raises failed" in m for m in messages)
