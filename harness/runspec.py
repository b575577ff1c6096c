"""A run as plain data: what an executor ships to wherever the run happens (in-process now, a cluster later).

Everything here is frozen, hashable and picklable, and :meth:`RunSpec.to_dict` is JSON-ready. Component parameters
are stored as canonical JSON text so that nested lists and tables stay hashable; ``params`` gives a fresh copy (a
component may change what it is given), read a few times per run, never per step.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

from metabench.cache import stable_hash


@dataclass(frozen=True)
class ComponentRef:
    """A registered component and its resolved parameters; ``label`` names a grid variant (defaults to ``name``)."""

    name: str
    params_json: str = "{}"
    label: str = ""

    @classmethod
    def of(cls, name: str, params: dict[str, Any] | None = None, label: str = "") -> ComponentRef:
        text = json.dumps(params or {}, sort_keys=True, separators=(",", ":"))
        return cls(name, text, label or name)

    @property
    def params(self) -> dict[str, Any]:
        return json.loads(self.params_json)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label or self.name, "params": self.params}


@dataclass(frozen=True)
class EvalProtocol:
    """The task shape and the fixed evaluation tasks shared by every cell of a benchmark."""

    n_way: int = 5
    k_shot: int = 1
    k_query: int = 15
    eval_tasks: int = 600
    val_tasks: int = 100
    eval_seed: int = 0
    eval_chunk: int = 50


@dataclass(frozen=True)
class Training:
    """Outer-loop settings: Adam on the meta-parameters, validation and checkpoint cadence."""

    meta_steps: int = 1000
    meta_batch: int = 4
    meta_lr: float = 1e-3
    validate_every: int = 100
    checkpoint_every: int = 100
    diagnostic_tasks: int = 20


@dataclass(frozen=True)
class Analysis:
    """How a run's result is read, not what it computes: stored in its record, left out of its config hash."""

    equivalence_margin: float | None = None  # display units (accuracy points); None: the metric's default
    max_seeds: int | None = None  # run until decided, up to this many seeds per cell (None: the grid's seeds only)
    looks: int = 1  # the planned looks at the comparisons (run until decided: the rounds), alpha split over them
    round: int = 1  # the look this run's seed was added for


@dataclass(frozen=True)
class RunSpec:
    """One grid cell and seed of a benchmark: everything that determines its result."""

    benchmark: str
    dataset: ComponentRef
    sampler: ComponentRef
    learner: ComponentRef
    strategy: ComponentRef
    backbone: ComponentRef
    protocol: EvalProtocol = field(default_factory=EvalProtocol)
    training: Training = field(default_factory=Training)
    seed: int = 0
    profile: str = ""
    analysis: Analysis = field(default_factory=Analysis)
    # the ``--set`` overrides it was planned under, as typed: a label for the leaderboard, not part of its identity
    overrides: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """``sampler/learner/strategy/seed=N``: what ``--only`` patterns and progress bars match and show."""
        return f"{self.sampler.label}/{self.learner.label}/{self.strategy.label}/seed={self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "profile": self.profile,
            "dataset": self.dataset.to_dict(),
            "sampler": self.sampler.to_dict(),
            "learner": self.learner.to_dict(),
            "strategy": self.strategy.to_dict(),
            "backbone": self.backbone.to_dict(),
            "protocol": asdict(self.protocol),
            "training": asdict(self.training),
            "seed": self.seed,
            "analysis": asdict(self.analysis),
        }

    @cached_property  # computed once per spec: hooks and reporters ask for it at every meta-step
    def config_hash(self) -> str:
        """Identifies the run's result: same hash, same run (the profile's name and how the result is read are left
        out; the profile's values are not)."""
        config = self.to_dict()
        del config["profile"], config["analysis"]
        return stable_hash(config)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        def ref(part: dict[str, Any]) -> ComponentRef:
            return ComponentRef.of(part["name"], part.get("params"), part.get("label", ""))

        return cls(
            benchmark=data["benchmark"],
            dataset=ref(data["dataset"]),
            sampler=ref(data["sampler"]),
            learner=ref(data["learner"]),
            strategy=ref(data["strategy"]),
            backbone=ref(data["backbone"]),
            protocol=EvalProtocol(**data["protocol"]),
            training=Training(**data["training"]),
            seed=data["seed"],
            profile=data.get("profile", ""),
            analysis=Analysis(**data.get("analysis", {})),
        )


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"training.meta_steps": 30, "learner.params.inner_lr": 0.4, ...}``: a config (:meth:`RunSpec.to_dict`, a
    record's ``config``) as dotted keys; an empty table is a value."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flat_config(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat
