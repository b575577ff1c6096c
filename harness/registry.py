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
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

import pluggy

from metabench import hookspecs
from metabench.errors import ConfigError, DuplicateComponentError

ENTRY_POINT_GROUP = "metabench"
_HOOK_NAMES = tuple(name for name in dir(hookspecs) if name.startswith("metabench_"))

KINDS: dict[str, str] = {
    "dataset": "metabench_register_datasets",
    "sampler": "metabench_register_samplers",
    "backbone": "metabench_register_backbones",
    "learner": "metabench_register_learners",
    "strategy": "metabench_register_strategies",
    "generative-model": "metabench_register_generative_models",
}

_REGISTRATION_HOOKS = frozenset(KINDS.values())
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
        bounded = self.low is not None or self.high is not None
        if bounded and isinstance(value, float) and not math.isfinite(value):
            raise fail("must be a finite number")
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

    @property
    def location(self) -> str:
        """Where the factory is defined: ``module.qualname (path:line)``, as far as Python can tell."""
        factory = inspect.unwrap(self.factory)
        name = f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', type(factory).__name__)}"
        try:
            path, line = inspect.getsourcefile(factory), inspect.getsourcelines(factory)[1]
        except (OSError, TypeError):
            return name
        return f"{name} ({path}:{line})"

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
    """A plugin that could not be loaded or registered: shown by ``metabench plugins``, the rest keeps working."""

    plugin: str
    provider: Provider
    error: str


@dataclass(frozen=True)
class Conflict:
    """A name of one kind registered by more than one plugin: only a benchmark that uses it fails."""

    kind: str
    name: str
    providers: tuple[Provider, ...]

    def message(self) -> str:
        who = " and ".join(f"{p} (plugin '{p.plugin}')" for p in self.providers)
        return (
            f"{self.kind} '{self.name}' is registered twice: by {who}; uninstall one of them or ask its author to "
            "rename the component"
        )


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or nothing when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class RegistrationError(Exception):
    """A plugin registered a component the host cannot use (bad name, bad parameter declaration)."""


def check_declaration(kind: str, name: str, factory: Callable[..., Any], params: tuple[Any, ...]) -> None:
    """Raise :class:`RegistrationError` unless ``params`` is a usable declaration for ``factory``: Params with
    distinct plain names, supported types, ``low <= high``, and defaults of their own type and range."""
    label = f"{kind} '{name}'"
    if not isinstance(name, str) or not name or any(c.isspace() or c == "/" for c in name):
        raise RegistrationError(f"{kind} name {name!r}: a name needs characters other than '/' and whitespace")
    if not callable(factory):
        raise RegistrationError(f"{label}: factory {factory!r} is not callable")
    seen: set[str] = set()
    for param in params:
        if not isinstance(param, Param):
            raise RegistrationError(f"{label}: parameter declaration {param!r} is not a metabench.Param")
        where = f"{label} parameter '{param.name}'"
        if not isinstance(param.name, str) or not param.name.isidentifier():
            raise RegistrationError(f"{label}: parameter name {param.name!r} is not an identifier")
        if param.name in seen:
            raise RegistrationError(f"{where} is declared twice")
        seen.add(param.name)
        if param.type not in _TYPE_NAMES:
            raise RegistrationError(f"{where}: type {param.type!r} is not one of {', '.join(_TYPE_NAMES.values())}")
        if param.low is not None and param.high is not None and param.low > param.high:
            raise RegistrationError(f"{where}: low = {param.low} > high = {param.high}")
        if param.default is not None or not param.nullable:
            try:
                param.validate(param.default, component=label, where="its default")
            except ConfigError as error:
                raise RegistrationError(f"{where}: the default is invalid ({error})") from None
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins without a signature: nothing to check
        return
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    missing = [name for name in seen if not accepts_any and name not in signature.parameters]
    if missing:
        raise RegistrationError(f"{label}: its factory takes no argument {', '.join(map(repr, sorted(missing)))}")


class Register:
    """The callable a registration hook receives: ``register(name, factory, summary="One line.")``; the parameters
    come from the factory's :func:`parameters` declaration. Bound to one plugin: what it registers is kept only
    when its hook returns without error."""

    def __init__(self, kind: str, provider: Provider):
        self.kind = kind
        self.provider = provider
        self.specs: list[ComponentSpec] = []

    def __call__(self, name: str, factory: Callable[..., Any], *, summary: str) -> Callable[..., Any]:
        params = declared_params(factory)
        check_declaration(self.kind, name, factory, params)
        self.specs.append(ComponentSpec(self.kind, name, factory, str(summary), params, self.provider))
        return factory


def _failure(error: BaseException) -> str:
    last_line = (str(error).strip().splitlines() or [""])[-1]
    return f"{type(error).__name__}: {last_line}" if last_line else type(error).__name__


class Registry:
    """All components by kind, the plugins that failed to load, the conflicting names, and hook calling."""

    def __init__(self) -> None:
        self.plugin_manager = pluggy.PluginManager("metabench")
        self.plugin_manager.add_hookspecs(hookspecs)
        self._components: dict[str, dict[str, ComponentSpec]] = {kind: {} for kind in KINDS}
        self.broken: list[BrokenPlugin] = []
        self.conflicts: dict[tuple[str, str], Conflict] = {}
        self._providers: dict[str, Provider] = {}
        self._warned: set[tuple[str, str, str]] = set()

    @classmethod
    def load(cls, extra_plugins: Iterable[ModuleType | object] = (), *, entry_points: bool = True) -> Registry:
        """Load every plugin of the entry-point group (unless ``entry_points=False``) plus ``extra_plugins``.

        Never raises for a plugin's fault: a plugin that fails to import (any exception, ``SystemExit`` included),
        has an invalid or misspelt hook implementation, raises in a registration hook or declares invalid parameters
        becomes a :class:`BrokenPlugin` (with a warning); a name registered by two plugins becomes a
        :class:`Conflict`. Everything else is registered."""
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
            label = f"{entry_point.name} = {entry_point.value}"
            try:
                plugin = entry_point.load()
            except KeyboardInterrupt:
                raise
            except BaseException as error:  # noqa: BLE001 - even sys.exit() at import only breaks that plugin
                self._break(label, provider, f"failed to load: {_failure(error)}")
                continue
            self._register_plugin(plugin, f"{provider.distribution}:{entry_point.name}", provider, label)

    def _break(self, plugin: str, provider: Provider, error: str) -> None:
        self.broken.append(BrokenPlugin(plugin, provider, error))
        warnings.warn(f"metabench plugin '{plugin}' from {provider} is broken: {error}", RuntimeWarning, stacklevel=3)

    def _register_plugin(self, plugin: object, name: str, provider: Provider, label: str | None = None) -> None:
        manager = self.plugin_manager
        if manager.is_registered(plugin):
            return
        try:
            manager.register(plugin, name=name)
        except pluggy.PluginValidationError as error:
            self._break(label or name, provider, f"invalid hook implementation: {error}")
            return
        callers = manager.get_hookcallers(plugin) or []
        unknown = [caller.name for caller in callers if caller.spec is None]
        if unknown:
            manager.unregister(plugin)
            hooks = ", ".join(f"'{hook}'{did_you_mean(hook, _HOOK_NAMES)}" for hook in sorted(unknown))
            self._break(label or name, provider, f"unknown hook {hooks}; hooks: see metabench.hookspecs")
            return
        self._providers[name] = provider
        for caller in callers:
            if caller.name not in _REGISTRATION_HOOKS:
                for impl in caller.get_hookimpls():
                    if impl.plugin is plugin:
                        impl.function = self._isolated(impl, caller.name)

    def _call_registration_hooks(self) -> None:
        registered: dict[tuple[str, str], list[ComponentSpec]] = {}
        for kind, hook_name in KINDS.items():
            for impl in getattr(self.plugin_manager.hook, hook_name).get_hookimpls():
                provider = self._providers[impl.plugin_name]
                register = Register(kind, provider)
                try:
                    impl.function(register=register)
                except KeyboardInterrupt:
                    raise
                except BaseException as error:  # noqa: BLE001 - a plugin's failure must not take down the host
                    self._break(provider.plugin, provider, f"{hook_name} raised {_failure(error)}")
                    continue
                for spec in register.specs:
                    registered.setdefault((spec.kind, spec.name), []).append(spec)
        for (kind, name), specs in registered.items():
            if len(specs) == 1:
                self._components[kind][name] = specs[0]
            else:
                self.conflicts[kind, name] = Conflict(kind, name, tuple(s.provider for s in specs))

    def names(self, kind: str) -> list[str]:
        return sorted(self._components[self._kind(kind)])

    def specs(self, kind: str | None = None) -> list[ComponentSpec]:
        kinds = [self._kind(kind)] if kind else list(KINDS)
        return [self._components[k][n] for k in kinds for n in sorted(self._components[k])]

    def get(self, kind: str, name: str, *, where: str = "") -> ComponentSpec:
        components = self._components[self._kind(kind)]
        prefix = f"{where}: " if where else ""
        if (kind, name) in self.conflicts:
            raise DuplicateComponentError(prefix + self.conflicts[kind, name].message())
        if name not in components:
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

    def fire(self, hook: str, **kwargs: Any) -> None:
        """Call the lifecycle hook ``hook`` through pluggy, so that its order holds (``tryfirst``/``trylast``, old- and
        new-style wrappers around the rest). Each implementation runs isolated (:meth:`_isolated`): one that raises
        is reported as a warning naming its plugin, once per run (``kwargs["spec"]``), and never stops the others."""
        getattr(self.plugin_manager.hook, hook)(**kwargs)

    def _isolated(self, impl: pluggy.HookImpl, hook: str) -> Callable[..., Any]:
        """``impl``'s function, made unable to raise an ``Exception`` into the host (``KeyboardInterrupt`` still stops
        the run): a wrapper that fails before it yields lets the call go on without it, one that fails after just
        ends."""
        function, argnames = impl.function, impl.argnames

        def report(args: tuple[Any, ...], error: Exception) -> None:
            run = getattr(dict(zip(argnames, args, strict=False)).get("spec"), "config_hash", "")
            key = (impl.plugin_name, hook, run)
            if key in self._warned:
                return
            self._warned.add(key)
            warnings.warn(
                f"plugin '{impl.plugin_name}' ({self._providers.get(impl.plugin_name)}) raised in {hook}: "
                f"{_failure(error)}" + (" (further failures of this run are not shown)" if run else ""),
                RuntimeWarning,
                stacklevel=2,
            )

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - reporters must not break runs
                report(args, error)
                return None

        def wrap(*args: Any, **kwargs: Any) -> Generator[None, Any, Any]:
            try:
                teardown = function(*args, **kwargs)
                next(teardown)
            except Exception as error:  # noqa: BLE001 - StopIteration too: a wrapper that never yields
                report(args, error)
                return (yield)
            try:
                inner = yield  # the result (new-style) or the Result (old-style hookwrapper) of what it wraps
            except BaseException as error:  # KeyboardInterrupt inside: the wrapper's own teardown sees it
                teardown.throw(error)
                raise
            try:
                teardown.send(inner)
            except StopIteration as done:
                return done.value
            except Exception as error:  # noqa: BLE001 - reporters must not break runs
                report(args, error)
                return inner
            teardown.close()
            report(args, RuntimeError("the wrapper yielded more than once"))
            return inner

        return wrap if impl.hookwrapper or impl.wrapper else call

    @staticmethod
    def _kind(kind: str) -> str:
        if kind not in KINDS:
            raise ConfigError(f"unknown component kind '{kind}'{did_you_mean(kind, KINDS)}; kinds: {', '.join(KINDS)}")
        return kind


@functools.cache
def default_registry() -> Registry:
    """The registry of the installed plugins, loaded once per process."""
    return Registry.load()
