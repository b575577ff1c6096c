"""The results store: one JSON record per run under ``<out>/runs/<config hash>.json``; checkpoints for resuming under
a checkpoint folder (``RunOptions.checkpoints``: ``<out>/checkpoints`` unless ``--checkpoint-dir`` says otherwise).

Files are written atomically (a temporary file in the same folder, then a rename), so a crash never leaves half a
record: a run either has its record or is run again.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from metabench.runspec import RunSpec

FINISHED = ("ok", "not-applicable", "failed")
_PACKAGES = ("metabench", "torch", "numpy", "scipy", "pluggy")
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def record_path(out: Path, spec: RunSpec) -> Path:
    return out / "runs" / f"{spec.config_hash}.json"


def checkpoint_path(directory: Path, spec: RunSpec) -> Path:
    return directory / f"{spec.config_hash}.pt"


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str = "w") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would make records unreadable to other users
    try:
        with os.fdopen(fd, mode) as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_record(out: Path, spec: RunSpec, record: dict[str, Any]) -> Path:
    path = record_path(out, spec)
    _atomic_write(path, lambda handle: json.dump(record, handle, indent=1, allow_nan=True))
    return path


def load_record(out: Path, spec: RunSpec) -> dict[str, Any] | None:
    path = record_path(out, spec)
    return json.loads(path.read_text()) if path.exists() else None


def load_records(out: Path) -> list[dict[str, Any]]:
    """Every record under ``out/runs``, oldest first."""
    paths = sorted((out / "runs").glob("*.json"), key=lambda p: p.stat().st_mtime)
    return [json.loads(p.read_text()) for p in paths]


def is_finished(out: Path, spec: RunSpec, *, retry_failed: bool = False) -> bool:
    record = load_record(out, spec)
    if record is None:
        return False
    return record["status"] != "failed" or not retry_failed


def save_checkpoint(directory: Path, spec: RunSpec, state: dict[str, Any]) -> None:
    _atomic_write(checkpoint_path(directory, spec), lambda handle: torch.save(state, handle), mode="wb")


def load_checkpoint(directory: Path, spec: RunSpec) -> dict[str, Any] | None:
    path = checkpoint_path(directory, spec)
    return torch.load(path, weights_only=False) if path.exists() else None


def remove_checkpoint(directory: Path, spec: RunSpec) -> None:
    checkpoint_path(directory, spec).unlink(missing_ok=True)


def git_commit() -> str | None:
    """The commit of the metabench source tree (``+dirty`` when it has uncommitted changes), if it is a checkout."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=source, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=source, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}+dirty" if dirty else commit


def environment(device: torch.device) -> dict[str, Any]:
    """Where a run happened: commit, package versions, Python, and the device in words."""
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
    }
