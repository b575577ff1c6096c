"""Throwaway plugin distributions for tests: written to a folder and pip-installed into the test environment."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


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


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args], check=True)
