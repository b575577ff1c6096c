"""The component registry: one namespace per kind, typed parameters, entry-point loading, and the error messages.

Plugins are loaded from the entry-point group ``metabench`` (the built-ins too). Each registration hook is called once
per plugin with a :class:`Register` bound to that plugin's distribution, so every component knows its provider.
"""

from __future__ import annotations

import difflib
import functools
import importlib.metadata
import inspect
import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

import pluggy

from metabench import hookspecs
from metabench.errors import ConfigError, DuplicateComponentError

ENTRY_POINT_GROUP = "metabench"

KINDS: dict[str, str] = {
    "dataset": "metabench_register_datasets",
    "sampler": "metabench_register_samplers",
    "backbone": "metabench_register_backbones",
    "learner": "metabench_register_learners",
    "strategy": "metabench_register_strategies",
    "generative-model": "metabench_register_generative_models",
}

F = TypeVar("F", bound=Callable[..., Any])
_TYPE_NAMES = {int: "int", float: "float", bool: "bool", str: "str", list: "list", dict: "table"}


@dataclass(frozen=True)
class Param:
    """One declared parameter of a component: drives validation, ``metabench describe`` and resolved configs.

    ``type`` is ``int``, ``float``, ``bool``, ``str``, ``list`` (with ``item_type`` for its elements) or ``dict`` (a
    TOML table, e.g. the parameters of a nested component, validated by whoever builds that component).
    ``low``/``high`` are inclusive bounds (for lists: on every element); ``choices`` restricts to listed values;
    ``nullable`` admits ``None`` (TOML has no null: a user writes the string ``"none"``).
    """

    name: str
    type: type
    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    item_type: type | None = None
    nullable: bool = False

    @property
    def type_name(self) -> str:
        name = _TYPE_NAMES.get(self.type, self.type.__name__)
        if self.type is list and self.item_type is not None:
            name = f"list[{_TYPE_NAMES.get(self.item_type, self.item_type.__name__)}]"
        return f"{name} | none" if self.nullable else name

    def validate(self, value: Any, *, component: str, where: str) -> Any:
        """Return ``value`` converted to this parameter's type, or raise :class:`ConfigError` saying what is wrong."""

        def fail(problem: str) -> ConfigError:
            return ConfigError(f"{where}: {component} parameter '{self.name}' = {value!r}: {problem}")

        if value is None or (self.nullable and isinstance(value, str) and value.lower() == "none"):
            if self.nullable:
                return None
            raise fail(f"expected {self.type_name}, got nothing")
        if self.type is list:
            if not isinstance(value, list | tuple):
                raise fail(f"expected {self.type_name}, got {type(value).__name__}")
            item_type = self.item_type or object
            items = [_coerce(item, item_type, fail) for item in value]
            for item in items:
                self._check_range(item, fail)
            return items
        converted = _coerce(value, self.type, fail)
        self._check_range(converted, fail)
        return converted

    def _check_range(self, value: Any, fail: Callable[[str], ConfigError]) -> None:
        if self.choices is not None and value not in self.choices:
            raise fail(f"must be one of {', '.join(map(repr, self.choices))}")
        ranged = self.low is not None or self.high is not None
        if ranged and isinstance(value, float) and not math.isfinite(value):
            raise fail(f"must be a finite number in {_range_text(self.low, self.high)}")
        if self.low is not None and value < self.low:
            raise fail(f"must be >= {self.low}")
        if self.high is not None and value > self.high:
            raise fail(f"must be <= {self.high}")


def _range_text(low: float | None, high: float | None) -> str:
    return f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"


def _coerce(value: Any, wanted: type, fail: Callable[[str], ConfigError]) -> Any:
    if wanted is object:
        return value
    if wanted is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and wanted is not bool:
        raise fail(f"expected {_TYPE_NAMES.get(wanted, wanted.__name__)}, got bool")
    if not isinstance(value, wanted):
        raise fail(f"expected {_TYPE_NAMES.get(wanted, wanted.__name__)}, got {type(value).__name__}")
    return value


PARAMS_ATTRIBUTE = "metabench_params"


def parameters(*params: Param) -> Callable[[F], F]:
    """Declare a component's parameters on its factory (a class or a function), where its code reads them.

    ``register(name, factory, summary=...)`` takes the declaration from there, so a default is written exactly once:
    the factory receives every declared parameter as a keyword argument and declares none of their defaults.
    """

    def declare(factory: F) -> F:
        setattr(factory, PARAMS_ATTRIBUTE, params)
        return factory

    return declare


def declared_params(factory: Callable[..., Any]) -> tuple[Any, ...]:
    """What :func:`parameters` declared on ``factory`` (inherited by subclasses), or nothing."""
    return tuple(getattr(factory, PARAMS_ATTRIBUTE, ()))


@dataclass(frozen=True)
class Provider:
    """Who registered a component: the distribution (and version) behind the entry point, or a test-time module."""

    distribution: str
    version: str
    plugin: str

    def __str__(self) -> str:
        return f"{self.distribution} {self.version}" if self.version else self.distribution


@dataclass(frozen=True)
class ComponentSpec:
    kind: str
    name: str
    factory: Callable[..., Any]
    summary: str
    params: tuple[Param, ...]
    provider: Provider

    @property
    def doc(self) -> str:
        return inspect.cleandoc(getattr(self.factory, "__doc__", None) or self.summary)

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def resolve(self, params: Mapping[str, Any] | None, *, where: str) -> dict[str, Any]:
        """Defaults overlaid with ``params``, each validated; unknown names raise :class:`ConfigError`."""
        params = dict(params or {})
        known = {p.name: p for p in self.params}
        for key in params:
            if key not in known:
                raise ConfigError(
                    f"{where}: {self.kind} '{self.name}' has no parameter '{key}'"
                    f"{did_you_mean(key, known)}; its parameters: {', '.join(known) or '(none)'}"
                )
        label = f"{self.kind} '{self.name}'"
        return {
            name: (p.validate(params[name], component=label, where=where) if name in params else p.default)
            for name, p in known.items()
        }


@dataclass(frozen=True)
class BrokenPlugin:
    plugin: str
    provider: Provider
    error: str


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or nothing when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Register:
    """The callable a registration hook receives: ``register(name, factory, summary="One line.")``; the parameters
    come from the factory's :func:`parameters` declaration."""

    def __init__(self, registry: Registry, kind: str, provider: Provider):
        self._registry = registry
        self.kind = kind
        self.provider = provider

    def __call__(self, name: str, factory: Callable[..., Any], *, summary: str) -> Callable[..., Any]:
        spec = ComponentSpec(self.kind, name, factory, summary, declared_params(factory), self.provider)
        self._registry._add(spec)
        return factory


class Registry:
    """All components by kind, the plugin manager for lifecycle hooks, and the plugins that failed to load."""

    def __init__(self) -> None:
        self.plugin_manager = pluggy.PluginManager("metabench")
        self.plugin_manager.add_hookspecs(hookspecs)
        self._components: dict[str, dict[str, ComponentSpec]] = {kind: {} for kind in KINDS}
        self.broken: list[BrokenPlugin] = []
        self._providers: dict[str, Provider] = {}

    @property
    def hook(self) -> Any:
        """Lifecycle hooks: ``registry.hook.metabench_run_started(spec=...)``."""
        return self.plugin_manager.hook

    @classmethod
    def load(cls, extra_plugins: Iterable[ModuleType | object] = (), *, entry_points: bool = True) -> Registry:
        """Load every plugin of the entry-point group (unless ``entry_points=False``) plus ``extra_plugins``."""
        registry = cls()
        if entry_points:
            registry._load_entry_points()
        for plugin in extra_plugins:
            name = getattr(plugin, "__name__", type(plugin).__name__)
            registry._register_plugin(plugin, name, Provider(name, "", name))
        registry._call_registration_hooks()
        return registry

    def _load_entry_points(self) -> None:
        seen: set[tuple[str, str]] = set()
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = entry_point.dist
            provider = Provider(dist.name if dist else "?", dist.version if dist else "", entry_point.name)
            key = (provider.distribution, entry_point.value)
            if key in seen:  # the same distribution found twice on sys.path (e.g. editable + build dir)
                continue
            seen.add(key)
            try:
                plugin = entry_point.load()
            except Exception as error:  # noqa: BLE001 - any import failure makes the plugin broken, not the host
                last_line = (str(error).strip().splitlines() or [""])[-1]
                message = f"{type(error).__name__}: {last_line}"
                self.broken.append(BrokenPlugin(f"{entry_point.name} = {entry_point.value}", provider, message))
                warnings.warn(
                    f"metabench plugin '{entry_point.name}' ({entry_point.value}) from {provider} failed to load: "
                    f"{message}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            self._register_plugin(plugin, f"{provider.distribution}:{entry_point.name}", provider)

    def _register_plugin(self, plugin: object, name: str, provider: Provider) -> None:
        if self.plugin_manager.is_registered(plugin):
            return
        self.plugin_manager.register(plugin, name=name)
        self._providers[name] = provider

    def _call_registration_hooks(self) -> None:
        for kind, hook_name in KINDS.items():
            for impl in getattr(self.plugin_manager.hook, hook_name).get_hookimpls():
                impl.function(register=Register(self, kind, self._providers[impl.plugin_name]))

    def _add(self, spec: ComponentSpec) -> None:
        existing = self._components[spec.kind].get(spec.name)
        if existing is not None:
            raise DuplicateComponentError(
                f"{spec.kind} '{spec.name}' is registered twice: by {existing.provider} "
                f"(plugin '{existing.provider.plugin}') and by {spec.provider} (plugin '{spec.provider.plugin}'); "
                "uninstall one of them or rename the component"
            )
        self._components[spec.kind][spec.name] = spec

    def names(self, kind: str) -> list[str]:
        return sorted(self._components[self._kind(kind)])

    def specs(self, kind: str | None = None) -> list[ComponentSpec]:
        kinds = [self._kind(kind)] if kind else list(KINDS)
        return [self._components[k][n] for k in kinds for n in sorted(self._components[k])]

    def get(self, kind: str, name: str, *, where: str = "") -> ComponentSpec:
        components = self._components[self._kind(kind)]
        if name not in components:
            prefix = f"{where}: " if where else ""
            available = ", ".join(sorted(components)) or "(none registered)"
            raise ConfigError(
                f"{prefix}unknown {kind} '{name}'{did_you_mean(name, components)}; available: {available}"
            )
        return components[name]

    def build(
        self, kind: str, name: str, params: Mapping[str, Any] | None = None, *, where: str = "", **context: Any
    ) -> Any:
        """Validate ``params`` against the component's declaration, then call its factory (with ``context``)."""
        spec = self.get(kind, name, where=where)
        resolved = spec.resolve(params, where=where or f"{kind} '{name}'")
        return spec.factory(**context, **resolved)

    @staticmethod
    def _kind(kind: str) -> str:
        if kind not in KINDS:
            raise ConfigError(f"unknown component kind '{kind}'{did_you_mean(kind, KINDS)}; kinds: {', '.join(KINDS)}")
        return kind


@functools.cache
def default_registry() -> Registry:
    """The registry of the installed plugins, loaded once per process."""
    return Registry.load()
