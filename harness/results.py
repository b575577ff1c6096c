"""The results store: one JSON record per run under ``<out>/runs/<config hash>.json``; checkpoints for resuming under
a checkpoint folder (``RunOptions.checkpoints``: ``<out>/checkpoints`` unless ``--checkpoint-dir`` says otherwise).

Files are written atomically (a temporary file in the same folder, then a rename), so a crash never leaves half a
record: a run either has its record or is run again. Records follow :mod:`metabench.schema`; one that cannot be read
under it is skipped with a warning naming the file. Checkpoints hold plain tensors and numbers only and are loaded
with ``weights_only=True``: a checkpoint file can never run code.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import warnings
from pathlib import Path
from typing import Any

import torch

from metabench.cache import atomic_write
from metabench.runspec import RunSpec
from metabench.schema import RecordError, dumps, parse

_PACKAGES = ("metabench", "torch", "numpy", "scipy", "pluggy")
_warned: set[tuple[str, int | None]] = set()
_SOURCE = Path(__file__).resolve().parent


def record_path(out: Path, spec: RunSpec) -> Path:
    return out / "runs" / f"{spec.config_hash}.json"


def checkpoint_path(directory: Path, spec: RunSpec) -> Path:
    return directory / f"{spec.config_hash}.pt"


def write_record(out: Path, spec: RunSpec, record: dict[str, Any]) -> Path:
    path = record_path(out, spec)
    text = dumps(record)  # before opening the file: a record that is not strict JSON leaves the old one intact
    atomic_write(path, lambda handle: handle.write(text))
    return path


def read_record(path: Path) -> dict[str, Any] | None:
    """The record at ``path``; ``None`` with a warning naming the file when it cannot be used (once per file
    version: the plan, the executor and the leaderboard all read the same folder)."""
    try:
        return parse(path.read_text(), str(path))
    except RecordError as error:
        problem = f"skipped {error}"
    except (OSError, UnicodeDecodeError) as error:
        problem = f"skipped {path}: cannot read it ({error})"
    try:
        version = (str(path), path.stat().st_mtime_ns)
    except OSError:
        version = (str(path), None)
    if version not in _warned:
        _warned.add(version)
        warnings.warn(problem, RuntimeWarning, stacklevel=2)
    return None


def load_record(out: Path, spec: RunSpec) -> dict[str, Any] | None:
    path = record_path(out, spec)
    return read_record(path) if path.exists() else None


def read_records(out: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every usable record under ``out/runs`` with its file, in file-name (config hash) order: the same on every
    clone, whatever the files' times; the others skipped with a warning."""
    paths = sorted((out / "runs").glob("*.json"))
    return [(path, record) for path in paths if (record := read_record(path)) is not None]


def load_records(out: Path) -> list[dict[str, Any]]:
    """Every usable record under ``out/runs``, in config-hash order."""
    return [record for _, record in read_records(out)]


def save_checkpoint(directory: Path, spec: RunSpec, state: dict[str, Any]) -> None:
    atomic_write(checkpoint_path(directory, spec), lambda handle: torch.save(state, handle), mode="wb")


def load_checkpoint(directory: Path, spec: RunSpec) -> dict[str, Any] | None:
    """The run's checkpoint; ``None`` (with a warning) when absent or not a plain-data checkpoint, so the run
    starts over rather than executing whatever a crafted file holds."""
    path = checkpoint_path(directory, spec)
    for stale in directory.glob(f".{path.name}.*.tmp"):  # a write killed mid-way (kill -9): only its own run's
        stale.unlink(missing_ok=True)
    if not path.exists():
        return None
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # noqa: BLE001 - any unreadable checkpoint means: train from the start
        warnings.warn(
            f"ignored checkpoint {path}: not a plain-data checkpoint ({type(error).__name__}); training from the start",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def remove_checkpoint(directory: Path, spec: RunSpec) -> None:
    checkpoint_path(directory, spec).unlink(missing_ok=True)


def git_commit(source: Path = _SOURCE) -> str | None:
    """The commit of the metabench source tree (``+dirty`` when it has uncommitted changes outside ``results/``,
    which the benchmarks themselves rewrite), if ``source`` is in a checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=source, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)results"],
            cwd=source,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}+dirty" if dirty else commit


def environment(device: torch.device) -> dict[str, Any]:
    """Where a run happened: commit, package versions, Python, the device in words and, on a CPU, torch's thread
    count and the instruction set its kernels were built for (``AVX2``, ``AVX512``): reductions are split by thread
    and vectorised by instruction set, so the last bits of a run depend on both. ``verify`` replays with the thread
    count and only where the instruction set is the record's."""
    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    return {
        "commit": git_commit(),
        "versions": versions,
        "python": platform.python_version(),
        "device": str(device),
        "device_name": device_name,
        **(
            {"threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}
            if device.type == "cpu"
            else {}
        ),
    }


def restamp(out: Path, spec: RunSpec, record: dict[str, Any], verified: dict[str, Any]) -> dict[str, Any]:
    """Write ``record`` again as ``verified`` (:mod:`metabench.verify`) and return it; an earlier verification moves
    to ``history``, while ``code_hash`` and ``provenance`` stay those of the code that made the numbers."""
    history = [*record.get("history", []), *([record["verified"]] if record.get("verified") else [])]
    stamped = {**record, "verified": verified, "history": history}
    write_record(out, spec, stamped)
    return stamped
