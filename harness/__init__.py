"""metabench: a plugin-based benchmark harness for meta-learning research.

This module is the plugin author's API, with :mod:`metabench.interfaces` (what each kind of component provides) and
:mod:`metabench.learning` (the network, inner loop and outer objective a learner is built from; import it by name):
``hookimpl`` marks hook implementations, ``parameters`` and ``Param`` declare a component's parameters beside its
factory, ``Register`` is what a registration hook receives, the task tensors, the named random streams, the cache
and its atomic writes, and a run's config as dotted keys. Plugins, the built-in ones included, import nothing else
from metabench.
"""

from __future__ import annotations

import pluggy

from metabench.cache import atomic_write, cache_dir, stable_hash
from metabench.errors import ConfigError, DuplicateComponentError, MetabenchError
from metabench.registry import Param, Register, Registry, parameters
from metabench.runspec import flat_config
from metabench.seeds import derive_seed, make_generator
from metabench.tasks import MixPlan, OuterBatch, TaskBatch, TaskShape

__version__ = "0.2.0"

hookimpl = pluggy.HookimplMarker("metabench")

__all__ = [
    "ConfigError",
    "DuplicateComponentError",
    "MetabenchError",
    "MixPlan",
    "OuterBatch",
    "Param",
    "Register",
    "Registry",
    "TaskBatch",
    "TaskShape",
    "atomic_write",
    "cache_dir",
    "derive_seed",
    "flat_config",
    "hookimpl",
    "make_generator",
    "parameters",
    "stable_hash",
]
