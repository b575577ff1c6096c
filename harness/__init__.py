"""metabench: a plugin-based benchmark harness for meta-learning research.

The plugin author's API: ``hookimpl`` marks hook implementations, ``Param`` declares a component's parameters,
and :mod:`metabench.interfaces` documents what each kind of component provides.
"""

from __future__ import annotations

import pluggy

from metabench.errors import ConfigError, DuplicateComponentError, MetabenchError
from metabench.registry import Param, Registry, default_registry
from metabench.tasks import MixPlan, OuterBatch, TaskBatch, TaskShape

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("metabench")

__all__ = [
    "ConfigError",
    "DuplicateComponentError",
    "MetabenchError",
    "MixPlan",
    "OuterBatch",
    "Param",
    "Registry",
    "TaskBatch",
    "TaskShape",
    "default_registry",
    "hookimpl",
]
