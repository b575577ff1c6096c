"""Built-in task samplers: episodic (``standard``, ``nme``) and unsupervised LASIUM (``lasium-n/-ro/-oc``)."""

from __future__ import annotations

from metabench import hookimpl
from metabench.plugins.samplers import episodic, lasium
from metabench.registry import Register


@hookimpl
def metabench_register_samplers(register: Register) -> None:
    episodic.register_all(register)
    lasium.register_all(register)
