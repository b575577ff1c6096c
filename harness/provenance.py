"""What produced a result besides its config: the code that can change its numbers, the libraries it runs on and the
device type. Two runs with the same config and the same provenance give the same record; a record whose provenance
differs from what would run now is *stale*, unless a replay of its first meta-steps under the code installed now gave
bit-identical parameters and scores (:mod:`metabench.verify`): then it is *verified* and counts as fresh.

**Scoped.** The code of a run is the set of Python modules it can execute, found by reading import statements (never
by importing): each component's module and every module it imports, transitively, with their parent packages; and
the host modules on the run path, the same closure from :mod:`metabench.runner`. The closure does not enter the
standard library, nor the host modules that only decide what runs or how results are read (:data:`READERS`): the
leaderboard and its inference (the record keeps every per-task score they are computed from), tables, CLI, plan,
reproductions, ``show``, provenance itself. A library outside metabench and its plugins (torch, numpy, tqdm, pluggy)
is identified by its distribution's name and version, not its source. A component that builds another one by name
(a LASIUM sampler's generative model, its ``model`` parameter) carries that component's identity too.

**Semantic.** A module's fingerprint hashes its syntax tree without docstrings (``ast.dump`` without positions):
comments, docstrings, blank lines and reformatting change nothing; a renamed variable, a changed default or a new
statement does. Imports under ``if TYPE_CHECKING:`` are not followed (they never run). Data files shipped in a
component's package (the embedded Omniglot archives) are part of its identity by content digest; hidden files, notes
(``.md``, ``.rst``), caches and dangling links are not. Files are read from disk, so that an uncommitted edit of an
editable install counts, and fingerprinted once per (path, mtime, size).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from metabench.cache import stable_hash
from metabench.registry import ComponentSpec, Registry
from metabench.runspec import RunSpec

KINDS = ("dataset", "sampler", "backbone", "learner", "strategy")
RUN_ROOT = "metabench.runner"
# Host modules that decide what runs or how records are read: they never change a record's numbers.
READERS = frozenset(
    f"metabench.{name}"
    for name in ("cli", "leaderboard", "inference", "tables", "reproductions", "show", "plan", "provenance")
)
_NOT_DATA_SUFFIXES = (".py", ".pyc", ".pyo", ".md", ".rst")
_Signature = tuple[int, int]
_modules: dict[Path, tuple[_Signature, str, tuple[tuple[int, str, tuple[str, ...]], ...]]] = {}
_digests: dict[Path, tuple[_Signature, str]] = {}
_origins: dict[str, tuple[Path, bool]] = {}


# ------------------------------------------------------------------------------------------------ one module


def _signature(path: Path) -> _Signature:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    node.body = body[1:]
    return tree


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> tuple[tuple[int, str, tuple[str, ...]], ...]:
    """``(level, module, names)`` of every import statement that can run (``import a.b``: ``(0, "a.b", ())``)."""
    found: list[tuple[int, str, tuple[str, ...]]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((0, alias.name, ()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or "", tuple(alias.name for alias in node.names)))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return tuple(found)


def module_fingerprint(path: Path) -> tuple[str, tuple[tuple[int, str, tuple[str, ...]], ...]]:
    """The semantic hash of the Python source at ``path`` and its import statements; cached per (mtime, size).
    A file that does not parse is hashed by its bytes (it fails at import, which its record then says)."""
    signature = _signature(path)
    cached = _modules.get(path)
    if cached and cached[0] == signature:
        return cached[1], cached[2]
    source = path.read_bytes()
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        value, imports = hashlib.sha256(source).hexdigest()[:16], ()
    else:
        imports = _imports(tree)
        dump = ast.dump(_strip_docstrings(tree), annotate_fields=True, include_attributes=False)
        value = hashlib.sha256(dump.encode()).hexdigest()[:16]
    _modules[path] = (signature, value, imports)
    return value, imports


def file_digest(path: Path) -> str:
    """sha256 of the bytes at ``path``, cached per (mtime, size)."""
    signature = _signature(path)
    cached = _digests.get(path)
    if cached and cached[0] == signature:
        return cached[1]
    value = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    _digests[path] = (signature, value)
    return value


# ------------------------------------------------------------------------------------------------ the closure


@functools.cache
def _plugin_tops() -> frozenset[str]:
    """Top-level packages fingerprinted by source: metabench's and those of the installed metabench plugins."""
    tops = {"metabench"}
    for entry in importlib.metadata.entry_points(group="metabench"):
        tops.add(entry.value.split(":")[0].split(".")[0])
    return frozenset(tops)


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _library(top: str) -> str | None:
    """The distribution that identifies ``top`` by its version; ``None`` when ``top`` is fingerprinted by source
    (metabench, a plugin, or a module that no distribution provides, such as one on ``sys.path``)."""
    if top in _plugin_tops():
        return None
    distributions = _distributions().get(top)
    return distributions[0] if distributions else None


def _origin(name: str) -> tuple[Path, bool] | None:
    """The source file of module ``name`` and whether it is a package, found without importing it (its parent
    packages excepted, as ``importlib.util.find_spec`` does); ``None`` for no module or no Python source."""
    if name in _origins:
        return _origins[name]
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    origin = (Path(spec.origin).resolve(), spec.submodule_search_locations is not None)
    _origins[name] = origin
    return origin


def _targets(name: str, is_package: bool, statement: tuple[int, str, tuple[str, ...]]) -> list[str]:
    level, module, names = statement
    if level:
        package = name if is_package else name.rpartition(".")[0]
        base = importlib.util.resolve_name("." * level + module, package) if package or module else module
    else:
        base = module
    if not names:
        return [base]
    return [base, *(f"{base}.{item}" for item in names if item != "*")]


def closure(roots: Iterable[str], stop: Iterable[str] = ()) -> tuple[dict[str, str], dict[str, str | None]]:
    """The modules ``roots`` can execute as ``{module: fingerprint}`` and the libraries they reach as
    ``{distribution: version}``; the closure neither records nor enters the modules of ``stop``.

    A parent package runs before its submodule, so its fingerprint is part of the closure; its own imports are
    followed only when a module imports from it. A built-in kind package imports every sibling to register them,
    and a sibling's definitions change no number of a run that does not use them."""
    stopped = set(stop)
    modules: dict[str, str] = {}
    libraries: dict[str, str | None] = {}
    queue = [(name, True) for name in roots]
    followed: set[str] = set()
    while queue:
        name, follow = queue.pop()
        if not name or name in stopped or name in followed or (name in modules and not follow):
            continue
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top == "__future__":
            continue
        distribution = _library(top)
        if distribution is not None:
            libraries[distribution] = _version(distribution)
            continue
        origin = _origin(name)
        if origin is None:
            continue  # an imported name that is not a module (``from x import function``), or no Python source
        path, is_package = origin
        value, imports = module_fingerprint(path)
        modules[name] = value
        parts = name.split(".")
        queue.extend((".".join(parts[:i]), False) for i in range(1, len(parts)))
        if follow:
            followed.add(name)
            queue.extend((target, True) for statement in imports for target in _targets(name, is_package, statement))
    return dict(sorted(modules.items())), dict(sorted(libraries.items()))


def package_data(module: str) -> dict[str, str]:
    """``{relative path: sha256}`` of the data files under the package of ``module`` (its own folder when it is a
    package, else its parent's; none for a top-level single-file module)."""
    origin = _origin(module)
    if origin is None or (not origin[1] and "." not in module):
        return {}
    root = origin[0].parent
    data = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") or part == "__pycache__" or part.endswith(".egg-info") for part in relative.parts):
            continue
        if path.suffix in _NOT_DATA_SUFFIXES or not path.is_file():  # is_file: False for a dangling link
            continue
        data[relative.as_posix()] = file_digest(path)
    return data


# ------------------------------------------------------------------------------------------------ a run's provenance


def factory_module(factory: Callable[..., Any]) -> str | None:
    return getattr(inspect.unwrap(getattr(factory, "func", factory)), "__module__", None)


def host() -> tuple[dict[str, str], dict[str, str | None]]:
    """The host modules on the run path, ``{module: fingerprint}``, and the libraries they reach."""
    return closure([RUN_ROOT], stop=READERS)


def component(
    spec: ComponentSpec, host_modules: Iterable[str], built: ComponentSpec | None = None
) -> tuple[dict[str, Any], dict[str, str | None]]:
    """``{name, distribution, version, fingerprint, modules, data}`` of a registered component (and ``builds``: the
    component ``built`` that it builds by name, for a sampler whose ``model`` parameter names a generative model), and
    the libraries its modules reach. ``host_modules`` are left out: the host part of the provenance has them."""
    module = factory_module(spec.factory)
    modules, libraries = closure([module] if module else [], stop=READERS | set(host_modules))
    data = package_data(module) if module else {}
    entry: dict[str, Any] = {"name": spec.name, "distribution": spec.provider.distribution}
    entry["version"] = spec.provider.version
    if built is not None:
        entry["builds"], reached = component(built, host_modules)
        libraries = {**libraries, **reached}
    entry["fingerprint"] = stable_hash([modules, data, entry.get("builds", {}).get("fingerprint")])
    entry["modules"] = modules
    entry["data"] = data
    return entry, libraries


def _built_by_name(spec: ComponentSpec, registry: Registry, params: Any) -> ComponentSpec | None:
    if spec.kind != "sampler" or "model" not in {p.name for p in spec.params}:
        return None
    where = f"sampler '{spec.name}'"
    return registry.get("generative-model", spec.resolve(params, where=where)["model"], where=f"{where} model")


class CodeNow:
    """The provenance of runs under the code installed now, read once: the host's closure and each component's are
    computed for the first run that needs them and reused for the others, so that a leaderboard or a plan over
    thousands of records reads each module once, not once per record (the 7,508 synthetic records of
    tests/test_calibration.py: 2.7 s instead of 29 s). Files edited after a closure was read are not seen: one per
    sweep."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._host: tuple[dict[str, str], dict[str, str | None]] | None = None
        self._components: dict[tuple[str, str, str | None], tuple[dict[str, Any], dict[str, str | None]]] = {}

    def of(self, spec: RunSpec, device_type: str, compiled: bool = False) -> dict[str, Any]:
        """The provenance of ``spec`` run now on a device of type ``device_type`` (``cpu``, ``cuda``), ``compiled``
        or not (``metabench run --compile``: not bit-identical to eager, so another identity; an eager run's
        provenance has no such key, which keeps the identity of every record made before there was a compiled path).

        Raises :class:`metabench.errors.ConfigError` when a component is not registered (any more)."""
        where = f"{spec.benchmark}: {spec.label}"
        if self._host is None:
            self._host = host()
        host_modules, libraries = self._host[0], dict(self._host[1])
        components = {}
        for kind in KINDS:
            ref = getattr(spec, kind)
            found = self.registry.get(kind, ref.name, where=where)
            built = _built_by_name(found, self.registry, ref.params)
            key = (kind, found.name, built.name if built else None)
            if key not in self._components:
                self._components[key] = component(found, host_modules, built)
            components[kind], reached = self._components[key]
            libraries.update(reached)
        made = {
            "components": components,
            "host": host_modules,
            "libraries": dict(sorted(libraries.items())),
            "device_type": device_type,
        }
        return {**made, "compiled": True} if compiled else made

    def of_record(self, record: dict[str, Any]) -> dict[str, Any]:
        """The provenance the run of ``record`` would have now: its config, device type and compilation, this code."""
        recorded = record.get("provenance") or {}
        spec = RunSpec.from_dict(record["config"])
        return self.of(spec, recorded.get("device_type", "cpu"), recorded.get("compiled", False))


def of(spec: RunSpec, registry: Registry, device_type: str, compiled: bool = False) -> dict[str, Any]:
    """:meth:`CodeNow.of` for one run: the code read now."""
    return CodeNow(registry).of(spec, device_type, compiled)


def code_hash(provenance: dict[str, Any]) -> str:
    """The identity of the code part of a run: equal hashes, same code, libraries and device type."""
    return stable_hash(provenance)


def standing(record: dict[str, Any], now: dict[str, Any]) -> tuple[str, str]:
    """``("fresh", "")``, ``("verified", "verified by replay of K steps")`` when a replay under the code of ``now``
    matched the record's probe, or ``("stale", what changed)``: since the code that last verified the record, else
    since the code that made it."""
    current = code_hash(now)
    if record.get("code_hash") == current:
        return "fresh", ""
    verified = record.get("verified") or {}
    if verified.get("code_hash") == current:
        return "verified", f"verified by replay of {verified.get('steps')} steps"
    return "stale", "; ".join(differences(verified.get("provenance") or record.get("provenance"), now))


def differences(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """What changed between two provenances whose code hashes differ, in words (``learner maml: module
    metabench.plugins.learners.maml changed``, ``strategy x: dist 0.1.0 -> dist 0.2.0``)."""
    if not old:
        return ["no provenance recorded"]
    if "libraries" not in old:
        return ["recorded with whole-file fingerprints (an older metabench)"]
    changes = []
    for kind, now in new["components"].items():
        changes += _component_changes(kind, (old.get("components") or {}).get(kind) or {}, now)
    changes += [f"host: {change}" for change in _module_changes(old.get("host"), new["host"])]
    before, after = old.get("libraries") or {}, new["libraries"]
    for name in sorted(set(before) | set(after)):
        if before.get(name) != after.get(name):
            changes.append(f"{name} {before.get(name)} -> {after.get(name)}")
    if old.get("device_type") != new["device_type"]:
        changes.append(f"device_type {old.get('device_type')} -> {new['device_type']}")
    if old.get("compiled", False) != new.get("compiled", False):
        changes.append(f"compiled {old.get('compiled', False)} -> {new.get('compiled', False)}")
    return changes or ["code hash differs"]


def _component_changes(kind: str, before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    label = f"{kind} {now['name']}"
    if before.get("name") != now["name"]:
        return [f"{kind}: {before.get('name')} -> {now['name']}"]
    if before.get("version") != now["version"] or before.get("distribution") != now["distribution"]:
        was = f"{before.get('distribution')} {before.get('version')}"
        return [f"{label}: {was} -> {now['distribution']} {now['version']}"]
    changes = [f"{label}: {change}" for change in _module_changes(before.get("modules"), now["modules"])]
    data_before, data_now = before.get("data") or {}, now["data"]
    for path in sorted(set(data_before) | set(data_now)):
        if data_before.get(path) != data_now.get(path):
            changes.append(f"{label}: data file {path} {_how(data_before.get(path), data_now.get(path))}")
    if "builds" in now:
        changes += [
            f"{label} {change}" for change in _component_changes("builds", before.get("builds") or {}, now["builds"])
        ]
    if not changes and before.get("fingerprint") != now["fingerprint"]:
        changes.append(f"{label}: code changed")
    return changes


def _module_changes(before: Any, now: dict[str, str]) -> list[str]:
    if not isinstance(before, dict):
        return ["code changed"] if before != now else []
    return [
        f"module {name} {_how(before.get(name), now.get(name))}"
        for name in sorted(set(before) | set(now))
        if before.get(name) != now.get(name)
    ]


def _how(before: str | None, now: str | None) -> str:
    return "added" if before is None else "removed" if now is None else "changed"


@functools.cache  # per process: a library upgraded under a running process is not what it runs
def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
