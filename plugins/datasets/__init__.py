"""Built-in datasets: registered through the entry-point group ``metabench``."""

from __future__ import annotations

from metabench import hookimpl
from metabench.registry import Register


@hookimpl
def metabench_register_datasets(register: Register) -> None:
    """Nothing registered yet."""
