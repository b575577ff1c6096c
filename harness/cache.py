"""Where metabench keeps what it computes once and reuses: decoded datasets, trained generative models."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    """``$METABENCH_CACHE``, else ``~/.cache/metabench``; created on first use."""
    path = Path(os.environ.get("METABENCH_CACHE") or Path.home() / ".cache" / "metabench")
    path.mkdir(parents=True, exist_ok=True)
    return path


def stable_hash(data: Any, length: int = 16) -> str:
    """A short hash of JSON-serialisable ``data`` that does not depend on dict order or the Python process."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
