"""The run record: its one schema, assembled here, written as strict JSON and checked when read.

A record is plain JSON under ``<out>/runs/<config hash>.json``. Every field a reader relies on is listed in
:data:`REQUIRED`; :func:`parse` rejects a record of another schema version, a missing field, and any non-finite
number (JSON has none: a ``NaN`` in a file is a damaged record, not a score).
"""

from __future__ import annotations

import json
import math
from typing import Any

from metabench.errors import MetabenchError
from metabench.runspec import RunSpec

SCHEMA_VERSION = 2
STATUSES = ("ok", "not-applicable", "failed")
REQUIRED = (
    "schema",
    "config_hash",
    "code_hash",
    "label",
    "config",
    "provenance",
    "environment",
    "status",
    "error",
    "strategy_plain",
    "tasks_hash",
)


class RecordError(MetabenchError):
    """A record file that cannot be used: unreadable, not JSON, of another schema, or missing fields."""


def new(
    spec: RunSpec,
    *,
    provenance: dict[str, Any],
    code_hash: str,
    environment: dict[str, Any],
    started_at: str,
    wall_seconds: float,
    status: str,
    error: str | None,
    facts: dict[str, Any],
    outcome: dict[str, Any] | None = None,
    traceback: str | None = None,
) -> dict[str, Any]:
    """The record of one run. ``facts`` holds what the run learnt before it could fail (``strategy_plain``,
    ``tasks_hash``); ``outcome`` the scores, curves and diagnostics of a finished run."""
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {STATUSES}")
    record: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "config_hash": spec.config_hash,
        "code_hash": code_hash,
        "label": spec.label,
        "config": spec.to_dict(),
        "overrides": list(spec.overrides),
        "provenance": provenance,
        "environment": environment,
        "seeds": {"run": spec.seed, "eval": spec.protocol.eval_seed},
        "started_at": started_at,
        "wall_seconds": wall_seconds,
        "status": status,
        "error": error,
        "strategy_plain": bool(facts.get("strategy_plain", False)),
        "tasks_hash": facts.get("tasks_hash"),
        **(outcome or {}),
    }
    if traceback:
        record["traceback"] = traceback
    return record


def nonfinite(value: Any, path: str = "") -> list[str]:
    """The dotted paths of the non-finite numbers in ``value`` (nested dicts and lists)."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [path or "value"]
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in nonfinite(item, f"{path}.{key}" if path else str(key))]
    if isinstance(value, list | tuple):
        return [p for i, item in enumerate(value) for p in nonfinite(item, f"{path}[{i}]")]
    return []


def dumps(record: dict[str, Any]) -> str:
    """Strict JSON (no ``NaN``/``Infinity``): a record that cannot be written so is a bug, and raises."""
    return json.dumps(record, indent=1, allow_nan=False)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def parse(text: str, source: str) -> dict[str, Any]:
    """The record in ``text`` (read from ``source``), or :class:`RecordError` saying why it cannot be used."""
    try:
        record = json.loads(text, parse_constant=_reject_constant)
    except ValueError as error:
        raise RecordError(f"{source}: not a valid record ({error})") from error
    if not isinstance(record, dict):
        raise RecordError(f"{source}: not a valid record (a JSON {type(record).__name__}, not an object)")
    version = record.get("schema")
    if version != SCHEMA_VERSION:
        raise RecordError(
            f"{source}: record schema {version!r}, this metabench reads schema {SCHEMA_VERSION}; "
            "rerun its benchmark to record it again"
        )
    missing = [key for key in REQUIRED if key not in record]
    if missing:
        raise RecordError(f"{source}: record lacks {', '.join(missing)}")
    if record["status"] not in STATUSES:
        raise RecordError(f"{source}: record status {record['status']!r} is not one of {', '.join(STATUSES)}")
    return record
