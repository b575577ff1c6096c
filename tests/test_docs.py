"""The documentation stays true: every hook and every built-in component is documented, the built-ins use only the
public plugin API, and the README's plugin example works as written."""

from __future__ import annotations

import ast
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_packages import pip, write_plugin_package

from metabench import hookspecs
from metabench.registry import KINDS, Registry

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


def _readme_plugin() -> tuple[str, str, str]:
    """The README's plugin example: its code, its entry point name and module."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Write your own plugin", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    entry = re.search(r'\[project\.entry-points\.metabench\]\s+(\w+) = "(\w+)"', code)
    return code, entry.group(1), entry.group(2)


def test_the_readme_plugin_example_installs_lists_and_runs(tmp_path: Path) -> None:
    code, entry_name, module = _readme_plugin()
    package = write_plugin_package(tmp_path, "my-plugin", module, code, version="0.1.0")
    # the README names the entry point itself; the helper names it after the module
    pyproject = package / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(f'{module} = "{module}"', f'{entry_name} = "{module}"'))
    pip("install", "--no-build-isolation", "--no-deps", str(package))
    try:
        listing = subprocess.run(
            [sys.executable, "-m", "metabench.cli", "plugins", "--kind", "strategy", "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        rows = {row["name"]: row for row in json.loads(listing.stdout)}
        assert rows["noisy-query"]["provider"] == "my-plugin" and rows["noisy-query"]["status"] == "ok"
        bench = tmp_path / "noisy.toml"
        bench.write_text(
            '[dataset]\nname = "sinusoid"\n[backbone]\nname = "mlp"\nparams = { widths = [8] }\n'
            "[protocol]\nn_way = 2\nk_shot = 4\nk_query = 4\neval_tasks = 4\nval_tasks = 2\n"
            "[training]\nmeta_steps = 2\nmeta_batch = 2\nvalidate_every = 2\ncheckpoint_every = 2\n"
            'diagnostic_tasks = 0\n[grid]\nsamplers = ["standard"]\nlearners = ["maml"]\n'
            'strategies = ["query", { name = "noisy-query", params = { sigma = 0.5 } }]\n'
        )
        run = subprocess.run(
            [sys.executable, "-m", "metabench.cli", "run", str(bench), "--out", str(tmp_path / "out"), "--no-progress"],
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stderr
        records = [json.loads(p.read_text()) for p in (tmp_path / "out" / "runs").glob("*.json")]
        assert sorted(r["config"]["strategy"]["name"] for r in records) == ["noisy-query", "query"]
        assert all(r["status"] == "ok" for r in records)
    finally:
        pip("uninstall", "-y", "my-plugin")


@pytest.mark.parametrize("path", sorted((ROOT / "harness").glob("*.py")), ids=lambda p: p.name)
def test_every_host_module_says_what_it_is_for(path: Path) -> None:
    assert ast.get_docstring(ast.parse(path.read_text())), f"{path.name} needs a module docstring"
