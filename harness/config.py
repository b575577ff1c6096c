"""Benchmark files (TOML) to a list of :class:`RunSpec`: profiles, grid expansion and validation.

Every component name and parameter is checked against the registry before anything runs; an error names the file and
the key (``benchmarks/x.toml: grid.learners[1]``), or the ``--set`` override that set it. The format is documented at
the top of ``benchmarks/default.toml``.
"""

from __future__ import annotations

import copy
import fnmatch
import itertools
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from metabench.errors import ConfigError
from metabench.registry import Param, Registry, did_you_mean
from metabench.runspec import Analysis, ComponentRef, EvalProtocol, RunSpec, Training

SECTIONS = ("benchmark", "dataset", "backbone", "protocol", "training", "grid", "params", "profiles")
GRID_AXES = {"samplers": "sampler", "learners": "learner", "strategies": "strategy"}

PROTOCOL_PARAMS = (
    Param("n_way", int, EvalProtocol.n_way, "classes per task", low=2),
    Param("k_shot", int, EvalProtocol.k_shot, "support examples per class (regression: support points)", low=1),
    Param("k_query", int, EvalProtocol.k_query, "query examples per class (regression: query points)", low=1),
    Param("eval_tasks", int, EvalProtocol.eval_tasks, "fixed meta-test tasks, identical for every cell", low=1),
    Param("val_tasks", int, EvalProtocol.val_tasks, "fixed meta-validation tasks", low=1),
    Param("eval_seed", int, EvalProtocol.eval_seed, "seed of the fixed evaluation tasks", low=0),
    Param("eval_chunk", int, EvalProtocol.eval_chunk, "tasks evaluated at once (memory)", low=1),
)
TRAINING_PARAMS = (
    Param("meta_steps", int, Training.meta_steps, "outer-loop steps", low=0),
    Param("meta_batch", int, Training.meta_batch, "tasks per outer step", low=1),
    Param("meta_lr", float, Training.meta_lr, "Adam learning rate of the outer loop", low=0.0),
    Param("validate_every", int, Training.validate_every, "steps between meta-validations (best weights kept)", low=1),
    Param(
        "checkpoint_every", int, Training.checkpoint_every, "steps between checkpoints (resume after a crash)", low=1
    ),
    Param(
        "diagnostic_tasks",
        int,
        Training.diagnostic_tasks,
        "test tasks for the learner's diagnostics (gradient norms, SVD)",
        low=0,
    ),
)
# An execution option beside the training settings, not one of them: RunOptions.compile, out of the config hash.
COMPILE = Param(
    "compile", bool, False, "torch.compile the per-task meta-gradient (as metabench run --compile); not bit-identical"
)
assert [p.name for p in PROTOCOL_PARAMS] == [f.name for f in fields(EvalProtocol)]
assert [p.name for p in TRAINING_PARAMS] == [f.name for f in fields(Training)]


def load_benchmark(
    path: str | Path, registry: Registry, *, profile: str | None = None, overrides: Sequence[str] = ()
) -> list[RunSpec]:
    """The validated runs of the benchmark file at ``path`` under ``profile`` (``None``: the base settings), with the
    ``overrides`` (``"training.meta_steps=500"``: a dotted key, a TOML value) applied after the profile."""
    return _read(path, registry, profile, overrides).expand()


def compile_key(
    path: str | Path, registry: Registry, *, profile: str | None = None, overrides: Sequence[str] = ()
) -> bool:
    """``[training] compile`` of the file, as :func:`load_benchmark` reads it (profile and overrides applied)."""
    return _read(path, registry, profile, overrides).compiles()


def _read(path: str | Path, registry: Registry, profile: str | None, overrides: Sequence[str]) -> _Benchmark:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as error:
        raise ConfigError(f"{path}: no such benchmark file") from error
    except IsADirectoryError as error:
        raise ConfigError(f"{path}: is a folder; give a benchmark TOML file, e.g. benchmarks/default.toml") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not a text file (a benchmark is TOML): {error}") from error
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the benchmark file ({error.strerror or error})") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from error
    return _Benchmark(path, raw, profile, registry, parse_overrides(overrides))


def parse_overrides(overrides: Sequence[str]) -> dict[tuple[str, ...], tuple[Any, str]]:
    """``KEY=VALUE`` strings to ``{key path: (value, the string)}``; the value is TOML, or a bare word as a string
    (``dataset.name=omniglot``), as Hydra and tox users write them."""
    parsed: dict[tuple[str, ...], tuple[Any, str]] = {}
    for text in overrides:
        key, sep, value = text.partition("=")
        keys = tuple(part.strip() for part in key.split("."))
        if not sep or not all(keys):
            raise ConfigError(f"--set {text}: expected a dotted KEY=VALUE, e.g. --set training.meta_steps=500")
        try:
            parsed[keys] = (tomllib.loads(f"value = {value}")["value"], text)
        except tomllib.TOMLDecodeError as error:
            if value.strip()[:1] in ("[", "{", '"', "'", ""):  # meant as TOML: say what is wrong with it
                raise ConfigError(
                    f"--set {text}: the value is not valid TOML: {error}; strings inside a list or table need "
                    "double quotes, and the whole argument single quotes for the shell: "
                    "--set 'grid.learners=[\"maml\"]'"
                ) from error
            parsed[keys] = (value.strip(), text)
    return parsed


SELECT_RULE = "a glob on the label sampler/learner/strategy/seed=N; without '/' it matches any one part"
"""How :func:`select` reads a pattern, for ``--only``'s help and errors."""


def select(specs: Iterable[RunSpec], pattern: str | None) -> list[RunSpec]:
    """The runs whose label matches ``pattern`` by :data:`SELECT_RULE` (all if ``None``)."""
    specs = list(specs)
    if not pattern:
        return specs
    if "/" in pattern:
        return [s for s in specs if fnmatch.fnmatchcase(s.label, pattern)]
    return [s for s in specs if any(fnmatch.fnmatchcase(part, pattern) for part in s.label.split("/"))]


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` laid over ``base``: tables merge key by key, anything else is replaced."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _shape(value: Any) -> str:
    """``int (3)``: a value's TOML-ish type and the value, for an error about its shape."""
    kind = "table" if isinstance(value, Mapping) else "list" if isinstance(value, list) else type(value).__name__
    return f"{kind} ({value!r})"


def _dotted(keys: Iterable[str | int]) -> str:
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys).lstrip(".")


class _Benchmark:
    """One file under one profile; knows where each key came from so that errors can say so."""

    def __init__(
        self,
        path: Path,
        raw: dict[str, Any],
        profile: str | None,
        registry: Registry,
        sets: dict[tuple[str, ...], tuple[Any, str]],
    ):
        self.path, self.registry, self.profile, self.sets = path, registry, profile or "", sets
        profiles = raw.get("profiles", {})
        if not isinstance(profiles, Mapping) or not all(isinstance(p, Mapping) for p in profiles.values()):
            raise ConfigError(
                f"{path}: profiles: expected a table of tables ([profiles.NAME] sections), got {_shape(profiles)}"
            )
        if profile is not None and profile not in profiles:
            raise ConfigError(
                f"{path}: no profile '{profile}'{did_you_mean(profile, profiles)}; "
                f"profiles: {', '.join(profiles) or '(none)'}"
            )
        self.override = profiles.get(profile, {}) if profile else {}
        self._check_keys(raw, SECTIONS)
        sections = [s for s in SECTIONS if s != "profiles"]
        self._check_keys(self.override, sections)
        base = {k: v for k, v in raw.items() if k != "profiles"}
        self.config = _merge(base, self.override)
        for keys, (value, text) in sets.items():
            if keys[0] not in sections:
                raise ConfigError(
                    f"--set {text}: unknown key '{keys[0]}'{did_you_mean(keys[0], sections)}; allowed: "
                    f"{', '.join(sections)}"
                )
            node = self.config
            for depth, key in enumerate(keys[:-1]):
                node = node.setdefault(key, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"--set {text}: {'.'.join(keys[: depth + 1])} is not a table")
            node[keys[-1]] = value

    def where(self, *keys: str | int) -> str:
        """``file: key`` for the key path ``keys``, or ``--set KEY=VALUE`` (and the key inside it) when one set it or
        a key inside it."""
        for n in range(len(keys), 0, -1):
            if keys[:n] in self.sets:
                inner = f" ({_dotted(keys)})" if n < len(keys) else ""
                return f"--set {self.sets[keys[:n]][1]}{inner}"
        inside = [text for set_keys, (_, text) in self.sets.items() if set_keys[: len(keys)] == keys]
        if inside:
            return " ".join(f"--set {text}" for text in inside) + f" ({_dotted(keys)})"
        return f"{self.path}: {self.key(*keys)}"

    def key(self, *keys: str | int) -> str:
        """The dotted key path ``keys``, pointing into the profile when the profile set it."""
        node: Any = self.override
        for key in keys:
            if isinstance(node, Mapping) and key in node:
                node = node[key]
            elif isinstance(node, list) and isinstance(key, int) and key < len(node):
                node = node[key]
            else:
                node = None
                break
        prefix = f"profiles.{self.profile}." if node is not None else ""
        return prefix + _dotted(keys)

    def _check_keys(self, table: Mapping[str, Any], allowed: Iterable[str], *path: str | int) -> None:
        allowed = list(allowed)
        for key in table:
            if key not in allowed:
                raise ConfigError(
                    f"{self.where(*path, key)}: unknown key{did_you_mean(key, allowed)}; allowed: {', '.join(allowed)}"
                )

    def _table(self, *keys: str) -> dict[str, Any]:
        node: Any = self.config
        for key in keys:
            node = node.get(key, {}) if isinstance(node, Mapping) else None
            if not isinstance(node, Mapping):
                raise ConfigError(f"{self.where(*keys)}: expected a table, got {_shape(node)}")
        return dict(node)

    def _section(self, name: str, params: tuple[Param, ...]) -> dict[str, Any]:
        table = self._table(name)
        self._check_keys(table, [p.name for p in params], name)
        return {
            p.name: p.validate(table[p.name], component=name, where=self.where(name, p.name))
            if p.name in table
            else p.default
            for p in params
        }

    def _component(self, kind: str, entry: Any, *keys: str | int) -> ComponentRef:
        """A grid entry or a section (``"name"`` or ``{name, params, label}``), validated with its shared params."""
        where = self.where(*keys)
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise ConfigError(f"{where}: expected a {kind} name or a table with 'name' (and 'params', 'label')")
        self._check_keys(entry, ("name", "params", "label"), *keys)
        spec = self.registry.get(kind, entry["name"], where=where)
        shared = self._table("params", kind, spec.name)
        if shared:  # validated on its own so that an error points at the [params.KIND.NAME] table
            spec.resolve(shared, where=self.where("params", kind, spec.name))
        own = entry.get("params", {})
        if not isinstance(own, Mapping):
            raise ConfigError(
                f"{self.where(*keys, 'params')}: expected a table of {kind} parameters ({{ name = value, ... }}), "
                f"got {_shape(own)}"
            )
        params = spec.resolve({**shared, **own}, where=self.where(*keys, "params") if own else where)
        return ComponentRef.of(spec.name, params, str(entry.get("label") or spec.name))

    def _axis(self, axis: str, kind: str) -> list[ComponentRef]:
        entries = self._table("grid").get(axis)
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f"{self.where('grid', axis)}: expected a non-empty list of {kind} names")
        refs = [self._component(kind, entry, "grid", axis, i) for i, entry in enumerate(entries)]
        labels = [r.label for r in refs]
        for label in labels:
            if labels.count(label) > 1:
                raise ConfigError(f"{self.where('grid', axis)}: label '{label}' appears twice; give each a 'label'")
        return refs

    def expand(self) -> list[RunSpec]:
        benchmark = self._table("benchmark")
        self._check_keys(benchmark, ("name", "description", "equivalence_margin"), "benchmark")
        name = benchmark.get("name", self.path.stem)
        if not isinstance(name, str):
            raise ConfigError(f"{self.where('benchmark', 'name')}: expected a string")
        for kind in self._table("params"):
            if kind not in ("dataset", "backbone", *GRID_AXES.values()):
                raise ConfigError(f"{self.where('params', kind)}: unknown component kind")
            for component in self._table("params", kind):
                self.registry.get(kind, component, where=self.where("params", kind, component))
        self._check_keys(self._table("grid"), (*GRID_AXES, "seeds"), "grid")
        seeds, analysis = self._seeds(benchmark)
        dataset = self._component("dataset", self._table("dataset"), "dataset")
        backbone = self._component("backbone", self._table("backbone"), "backbone")
        protocol = EvalProtocol(**self._section("protocol", PROTOCOL_PARAMS))
        training = Training(**self._training())
        axes = [self._axis(axis, kind) for axis, kind in GRID_AXES.items()]
        samplers = axes[0]
        # grid keys choose which runs there are, not what a run is: a seed added by --set joins its cell's table
        labels = tuple(text for keys, (_, text) in self.sets.items() if keys[0] != "grid")
        # seed outermost: a benchmark stopped halfway already has every cell of the first seeds
        return [
            RunSpec(
                name,
                dataset,
                sampler,
                learner,
                strategy,
                backbone,
                protocol,
                training,
                seed,
                self.profile,
                analysis,
                labels,
            )
            for seed, sampler, learner, strategy in itertools.product(seeds, *axes)
            if sampler is samplers[0] or self._meta_trains(learner)
        ]

    def _training(self) -> dict[str, Any]:
        """The ``[training]`` settings of :class:`Training`, less :data:`COMPILE` (validated here all the same)."""
        settings = self._section("training", (*TRAINING_PARAMS, COMPILE))
        del settings["compile"]
        return settings

    def compiles(self) -> bool:
        return bool(self._section("training", (*TRAINING_PARAMS, COMPILE))["compile"])

    def _meta_trains(self, learner: ComponentRef) -> bool:
        """False for a baseline that reads no training task (``scratch``): the sampler axis cannot change its runs,
        so it runs (and is shown) once, with the grid's first sampler."""
        return bool(getattr(self.registry.get("learner", learner.name).factory, "meta_trains", True))

    def _seeds(self, benchmark: dict[str, Any]) -> tuple[list[int], Analysis]:
        """``[grid] seeds``: a list, or ``{ start = [0, 1, 2], until_decided = true, max = 10 }`` (more seeds in
        rounds while a comparison is undecided); and ``[benchmark] equivalence_margin``, how the runs are read."""
        seeds: Any = self._table("grid").get("seeds", [0])
        max_seeds = None
        if isinstance(seeds, Mapping):
            self._check_keys(seeds, ("start", "until_decided", "max"), "grid", "seeds")
            if seeds.get("until_decided", False) is not False:
                max_seeds = seeds.get("max")
                if seeds.get("until_decided") is not True or not isinstance(max_seeds, int):
                    raise ConfigError(f"{self.where('grid', 'seeds')}: until_decided = true needs max = N (an integer)")
            seeds = seeds.get("start", [0])
        if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
            raise ConfigError(f"{self.where('grid', 'seeds')}: expected a non-empty list of integers >= 0")
        if len(set(seeds)) < len(seeds):
            twice = sorted({s for s in seeds if seeds.count(s) > 1})
            raise ConfigError(
                f"{self.where('grid', 'seeds')}: seed {', '.join(map(str, twice))} appears twice; each seed once"
            )
        if max_seeds is not None and max_seeds < len(seeds):
            raise ConfigError(f"{self.where('grid', 'seeds', 'max')} = {max_seeds}: fewer than the {len(seeds)} seeds")
        margin = benchmark.get("equivalence_margin")
        if margin is not None and (isinstance(margin, bool) or not isinstance(margin, int | float) or margin <= 0):
            raise ConfigError(f"{self.where('benchmark', 'equivalence_margin')} = {margin!r}: expected a number > 0")
        return seeds, Analysis(None if margin is None else float(margin), max_seeds)
