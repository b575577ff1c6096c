"""What produced a result besides its config: the code of each component, the host modules a run executes, torch and
the device type. Two runs with the same config and the same provenance give the same record; a record whose
provenance differs from what would run now is *stale*.

A component's code is fingerprinted as the hash of the source files of the package that provides it, read from disk,
so that an uncommitted edit of an editable install counts: for a third-party plugin the top-level package of the
module that defines its factory, for a built-in its kind's sub-package ``metabench/plugins/<kind>/``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from metabench.cache import stable_hash
from metabench.registry import ComponentSpec, Registry
from metabench.runspec import RunSpec

# The host modules whose code decides a run's numbers (config, CLI and reporting only decide what runs and how it is
# shown). Their fingerprint is part of every record's provenance.
HOST_MODULES = ("runner", "evaluation", "tasks", "seeds", "interfaces", "statistics", "schema")
_HOST = Path(__file__).resolve().parent
_BUILTIN_PREFIX = "metabench.plugins."
_fingerprints: dict[Path, tuple[Any, str]] = {}


def fingerprint(paths: list[Path], root: Path | None = None) -> str:
    """A hash of the content of ``paths`` (Python sources), cached while their sizes and mtimes do not change."""
    key = Path(root or paths[0]).resolve() if paths else Path()
    signature = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths)
    cached = _fingerprints.get(key)
    if cached and cached[0] == signature:
        return cached[1]
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(root) if root else path.name).encode())
        digest.update(path.read_bytes())
    value = digest.hexdigest()[:16]
    _fingerprints[key] = (signature, value)
    return value


def source_package(factory: Callable[..., Any]) -> Path | None:
    """The folder (or single module file) whose sources implement ``factory``; ``None`` when it has no file."""
    module_name = getattr(inspect.unwrap(getattr(factory, "func", factory)), "__module__", None)
    if not module_name:
        return None
    parts = module_name.split(".")
    package = ".".join(parts[:3]) if module_name.startswith(_BUILTIN_PREFIX) else parts[0]
    module = sys.modules.get(package)
    file = getattr(module, "__file__", None)
    if not file:
        return None
    path = Path(file).resolve()
    return path.parent if path.name == "__init__.py" else path


def code_fingerprint(factory: Callable[..., Any]) -> str | None:
    source = source_package(factory)
    if source is None:
        return None
    if source.is_dir():
        return fingerprint(sorted(p for p in source.rglob("*.py") if "__pycache__" not in p.parts), root=source)
    return fingerprint([source])


def component(spec: ComponentSpec) -> dict[str, Any]:
    """``{name, distribution, version, fingerprint}`` of a registered component."""
    return {
        "name": spec.name,
        "distribution": spec.provider.distribution,
        "version": spec.provider.version,
        "fingerprint": code_fingerprint(spec.factory),
    }


def host_fingerprint() -> str:
    return fingerprint([_HOST / f"{name}.py" for name in HOST_MODULES], root=_HOST)


def of(spec: RunSpec, registry: Registry, device_type: str) -> dict[str, Any]:
    """The provenance of ``spec`` run now with ``registry`` on a device of type ``device_type`` (``cpu``, ``cuda``).

    Raises :class:`metabench.errors.ConfigError` when a component is not registered (any more)."""
    kinds = ("dataset", "sampler", "backbone", "learner", "strategy")
    where = f"{spec.benchmark}: {spec.label}"
    return {
        "components": {kind: component(registry.get(kind, getattr(spec, kind).name, where=where)) for kind in kinds},
        "host": host_fingerprint(),
        "torch": _version("torch"),
        "device_type": device_type,
    }


def code_hash(provenance: dict[str, Any]) -> str:
    """The identity of the code part of a run: equal hashes, same code, torch and device type."""
    return stable_hash(provenance)


def differences(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """What changed between two provenances whose code hashes differ, in words (``learner fake-learner: code
    changed``, ``strategy x: dist 0.1.0 -> dist 0.2.0``)."""
    if not old:
        return ["no provenance recorded"]
    changes = []
    for kind, now in new["components"].items():
        before = old.get("components", {}).get(kind) or {}
        if before.get("version") != now["version"] or before.get("distribution") != now["distribution"]:
            was = f"{before.get('distribution')} {before.get('version')}"
            changes.append(f"{kind} {now['name']}: {was} -> {now['distribution']} {now['version']}")
        elif before.get("fingerprint") != now["fingerprint"]:
            changes.append(f"{kind} {now['name']}: code changed")
    if old.get("host") != new["host"]:
        changes.append("host code changed")
    for key in ("torch", "device_type"):
        if old.get(key) != new[key]:
            changes.append(f"{key} {old.get(key)} -> {new[key]}")
    return changes or ["code hash differs"]


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
