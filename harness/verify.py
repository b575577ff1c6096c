"""``metabench verify [RESULTS] [--steps K]``: replay the first meta-steps of every stale record under the code
installed now, and re-stamp as verified those whose replay is bit-identical to the record's probe.

Every record of a meta-trained run stores a probe (:mod:`metabench.probe`): the sha256 of its parameters after each of
its first K meta-steps (K = 10, or fewer when the run has fewer) and of its scores on 4 meta-validation tasks after
step K, taken on the run's own device while it trained. ``verify`` builds each stale run from its config exactly as
:func:`metabench.runner.run` does (same seeds, same generators, same fixed tasks, on a device of the record's type),
trains K steps and compares. A CPU replay uses the record's torch thread count: kernels split their reductions by
thread, so the same code under another count parts in the last bits at step 1. For the same reason a CPU record is
replayed only on a CPU whose kernels use its instruction set (``AVX2``, ``AVX512``: the record's
``environment.cpu_capability``); elsewhere it stays stale, and the report says where it can be verified. Identical
digests: the record gets ``verified: {code_hash, provenance, at, steps}`` (an earlier verification moves to
``history``; ``code_hash`` and ``provenance`` stay those of the code that made the numbers) and counts as fresh for
``run``, ``--dry-run`` and the leaderboard. Different: it stays stale and the report names the first meta-step whose
parameters differ.

What a probe proves: the installed code computes bit-identical parameters for the first K meta-steps of this config
on this device type, bit-identical evaluation tasks, and bit-identical scores on the probe tasks at step K. What it
cannot prove: a change that only acts after step K (a schedule, a step-dependent branch), one that acts only on
evaluation tasks beyond the probe's 4 or in the final test evaluation, diagnostics and checkpoint handling, nor
agreement on another device type. A refactor that moves code without changing what it computes passes; a changed
default that the first K steps use fails.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from metabench import provenance, results, runner
from metabench.errors import MetabenchError
from metabench.registry import Registry
from metabench.runner import RunOptions
from metabench.runspec import RunSpec

# Records made before the environment named its thread count ran under ``metabench run``'s default, one thread.
RECORDED_THREADS = 1


@dataclass(frozen=True)
class Outcome:
    label: str
    status: str  # fresh | verified | stale | no probe
    detail: str = ""
    seconds: float = 0.0


def compare(recorded: dict[str, Any], replayed: dict[str, Any] | None, steps: int) -> str:
    """``""`` when the replay's first ``steps`` digests (and, over the whole probe, its scores) equal the record's;
    else where they part (``first diverging step 3``)."""
    if not replayed:
        return "the replay made no probe (the learner no longer meta-trains?)"
    for step, (before, now) in enumerate(zip(recorded["params"][:steps], replayed["params"], strict=False), start=1):
        if before != now:
            return f"first diverging step {step}"
    if len(replayed["params"]) < steps:
        return f"the replay stopped after {len(replayed['params'])} steps"
    if steps == recorded["steps"] and recorded.get("scores") != replayed.get("scores"):
        return f"same parameters for {steps} steps, different probe scores at step {steps}"
    return ""


def verify_record(record: dict[str, Any], code: provenance.CodeNow, steps: int | None) -> tuple[Outcome, dict | None]:
    """The verdict on one record under the installed ``code`` and, when its replay matched, its ``verified`` stamp."""
    started = time.perf_counter()
    label = record["label"]
    spec = RunSpec.from_dict(record["config"])
    try:
        now = code.of_record(record)
    except MetabenchError as error:
        return Outcome(label, "stale", f"cannot check its code: {error}"), None
    standing, detail = provenance.standing(record, now)
    if standing != "stale":
        return Outcome(label, "fresh", detail), None  # the same code, or verified under it before
    probe = record.get("probe")
    if not probe:
        return Outcome(label, "no probe", f"{detail} (recorded without a probe: rerun it)"), None
    k = min(steps or probe["steps"], probe["steps"])
    environment = record.get("environment") or {}
    recorded_isa, isa = environment.get("cpu_capability"), torch.backends.cpu.get_cpu_capability()
    if now["device_type"] == "cpu" and recorded_isa not in (None, isa):
        # CPU kernels round differently per instruction set: one record's first meta-step under ATen's DEFAULT and
        # AVX2 kernels, or with oneDNN held to SSE4.1, gave three parameter digests on one machine.
        why = f"not replayable here: recorded with {recorded_isa} CPU kernels, this machine has {isa} ones"
        return Outcome(label, "stale", f"{why}; verify it on a CPU with {recorded_isa} ({detail})"), None
    try:
        runner.resolve_device(now["device_type"])
        with tempfile.TemporaryDirectory(prefix="metabench-verify-") as scratch:
            threads = environment.get("threads", RECORDED_THREADS)
            options = RunOptions(
                Path(scratch), now["device_type"], progress=False, threads=threads, compile="compiled" in now
            )
            replay = runner.replay_probe(spec, code.registry, options, k)
    except Exception as error:  # noqa: BLE001 - a replay that cannot run leaves the record stale, the others go on
        return Outcome(label, "stale", f"replay failed: {type(error).__name__}: {error}"), None
    seconds = time.perf_counter() - started
    parted = compare(probe, replay["probe"], k)
    if not parted and replay["tasks_hash"] != record.get("tasks_hash"):
        parted = "different evaluation tasks"
    if parted == "first diverging step 1" and now["device_type"] == "cpu" and recorded_isa is None:
        # records made before ``cpu_capability`` was recorded, on AVX-512 CPUs, part at step 1 on AVX2 ones
        parted += f" (or the record's CPU kernels, which it does not name, were not {isa} ones)"
    if parted:
        return Outcome(label, "stale", f"{parted} ({detail})", seconds), None
    stamp = {
        "code_hash": provenance.code_hash(now),
        "provenance": now,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "steps": k,
    }
    return Outcome(label, "verified", f"verified by replay of {k} steps", seconds), stamp


def verify(out: Path, registry: Registry, steps: int | None = None, echo: Callable[[str], None] = print) -> int:
    """Verify every record under ``out/runs``; print one line a record and a summary. 0 when every record is fresh
    or verified, else 1."""
    if steps is not None and steps < 1:
        raise MetabenchError(f"--steps {steps}: must be >= 1")
    started = time.perf_counter()
    found = results.read_records(out)
    if not found:
        raise MetabenchError(f"{out}: no run records under {out / 'runs'}")
    code = provenance.CodeNow(registry)
    outcomes = []
    for i, (_, record) in enumerate(found, start=1):
        outcome, stamp = verify_record(record, code, steps)
        if stamp is not None:
            results.restamp(out, RunSpec.from_dict(record["config"]), record, stamp)
        detail = f": {outcome.detail}" if outcome.detail else ""
        took = f" ({outcome.seconds:.1f} s)" if outcome.seconds else ""
        echo(f"[{i}/{len(found)}] {outcome.label}: {outcome.status}{detail}{took}")
        outcomes.append(outcome)
    echo(summary(outcomes, time.perf_counter() - started))
    return 0 if all(o.status in ("fresh", "verified") for o in outcomes) else 1


def summary(outcomes: list[Outcome], seconds: float) -> str:
    """``4 records: 1 fresh, 2 verified by replay, 1 still stale (first diverging step 3), 0 without probe; 2.1 s``."""

    def count(status: str) -> int:
        return sum(o.status == status for o in outcomes)

    stale = [o for o in outcomes if o.status == "stale"]
    steps = sorted({o.detail.split(" (")[0] for o in stale})
    return (
        f"{len(outcomes)} record{'s' if len(outcomes) != 1 else ''}: {count('fresh')} fresh, "
        f"{count('verified')} verified by replay, {len(stale)} still stale"
        f"{' (' + '; '.join(steps) + ')' if steps else ''}, {count('no probe')} without probe; {seconds:.1f} s"
    )
