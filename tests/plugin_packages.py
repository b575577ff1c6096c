"""Throwaway plugin distributions for tests: written to a folder and pip-installed into a folder of their own, which
only the test that installed them puts on the path."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest


def write_plugin_package(root: Path, dist: str, module: str, body: str, version: str = "0.3.1") -> Path:
    """A distribution ``dist`` whose package ``module`` (``body`` as its ``__init__.py``) is an entry point of the
    group ``metabench`` named ``module``."""
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


@contextlib.contextmanager
def installed(root: Path, *packages: Path) -> Iterator[Path]:
    """The distributions ``packages`` pip-installed into a new folder under ``root``, which is on the path of this
    process (``sys.path``, so its entry points are found) and of every process it starts (``PYTHONPATH``: CLI calls,
    Ray workers) until the block ends. The test environment itself is left as it was, so the tests that other
    pytest-xdist workers run at the same time never load these plugins (some are broken on purpose)."""
    target = Path(tempfile.mkdtemp(prefix="site-", dir=root))
    pip_install = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "install", "--no-deps"]
    subprocess.run([*pip_install, "--no-build-isolation", "--target", str(target), *map(str, packages)], check=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(target))
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")])))
        yield target
