"""Which runs of a grid to run: each spec's status against the records under ``--out``, and the one-line plan.

A spec is ``recorded`` when a record with its config and the same code (:mod:`metabench.provenance`) exists, or one
whose replay under the installed code matched its probe (:mod:`metabench.verify`; its detail then says "verified by
replay of K steps"); ``stale`` when the config matches but the code, libraries or device type differ (a failed
record of other code too: a fixed plugin reruns its failures), ``failed`` when its record says so, and ``to run``
otherwise. A grid is planned once, on the driver (:func:`metabench.benchmark.run_benchmark`), and an executor runs
the specs :func:`to_run` selects, so that the in-process and distributed executors skip and rerun exactly the same
runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from metabench import provenance, results
from metabench.registry import Registry
from metabench.runner import RunOptions, resolve_device
from metabench.runspec import RunSpec

STATUSES = ("recorded", "stale", "failed", "to run")


@dataclass(frozen=True)
class Selection:
    """Which planned runs of a grid run again, beyond those without a record: grid-level choices of the driver."""

    retry_failed: bool = False  # run again the specs whose record is ``failed``
    rerun: bool = False  # run every spec again, whatever its record
    reuse_stale: bool = False  # keep records whose config matches but whose code differs


@dataclass(frozen=True)
class Planned:
    spec: RunSpec
    status: str  # one of STATUSES
    detail: str = ""  # for stale runs: what changed
    record: dict[str, Any] | None = None

    def will_run(self, selection: Selection) -> bool:
        if selection.rerun or self.status == "to run":
            return True
        if self.status == "stale":
            return not selection.reuse_stale
        return self.status == "failed" and selection.retry_failed


def plan(specs: Sequence[RunSpec], options: RunOptions, registry: Registry) -> list[Planned]:
    """The status of every spec under ``options.out`` for code run now on ``options.device`` (compiled or not)."""
    device_type = resolve_device(options.device).type
    code = provenance.CodeNow(registry)
    planned = []
    for spec in specs:
        record = results.load_record(options.out, spec)
        if record is None:
            planned.append(Planned(spec, "to run"))
            continue
        standing, detail = provenance.standing(record, code.of(spec, device_type, options.compile))
        if standing == "stale":
            planned.append(Planned(spec, "stale", detail, record))
        elif record["status"] == "failed":
            planned.append(Planned(spec, "failed", record.get("error") or "", record))
        else:
            planned.append(Planned(spec, "recorded", detail, record))
    return planned


def to_run(planned: Sequence[Planned], selection: Selection) -> list[RunSpec]:
    """The specs an executor must run now (the others keep their records)."""
    return [p.spec for p in planned if p.will_run(selection)]


def summary(planned: Sequence[Planned], selection: Selection) -> str:
    """One line: ``24 runs: 20 recorded with the same config and code, 4 to run`` (and what the flags change)."""
    counts = Counter(p.status for p in planned)
    n_run = sum(p.will_run(selection) for p in planned)
    total = f"{len(planned)} run{'s' if len(planned) != 1 else ''}"
    if selection.rerun:
        return f"{total}: all to run again (--rerun)"
    verified = sum(p.status == "recorded" and bool(p.detail) for p in planned)
    by_replay = f" ({verified} verified by replay)" if verified else ""
    if n_run == 0 and counts["recorded"] == len(planned):
        return (
            f"{total}: all recorded with the same config and code{by_replay}; nothing to run "
            "(--rerun runs them again on this machine)"
        )
    parts = []
    if counts["recorded"]:
        parts.append(f"{counts['recorded']} recorded with the same config and code{by_replay}")
    if counts["stale"]:
        kept = "kept by --reuse-stale" if selection.reuse_stale else "to run again"
        parts.append(f"{counts['stale']} stale (same config, different code: {kept})")
    if counts["failed"]:
        failed = "to run again (--retry-failed)" if selection.retry_failed else "kept; --retry-failed runs them again"
        parts.append(f"{counts['failed']} failed ({failed})")
    parts.append(f"{n_run} to run")
    return f"{total}: " + ", ".join(parts)
