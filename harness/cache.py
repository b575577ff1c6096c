"""Where metabench keeps what it computes once and reuses (decoded datasets, trained generative models, compiled
graphs), and the one way it writes a file that others may be reading (records, checkpoints, cache entries):
atomically."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

_UMASK = os.umask(0o022)
os.umask(_UMASK)


def cache_dir() -> Path:
    """``$METABENCH_CACHE``, else ``~/.cache/metabench``; created on first use."""
    path = Path(os.environ.get("METABENCH_CACHE") or Path.home() / ".cache" / "metabench")
    path.mkdir(parents=True, exist_ok=True)
    return path


def use_compile_cache() -> Path:
    """Point torch's persistent compile caches (Inductor's FX graph cache, the AOTAutograd cache) at
    ``cache_dir()/torch-compile``, unless ``TORCHINDUCTOR_CACHE_DIR`` says where: compiling is then paid once per
    machine, not per process (the second process's compile and two steps fell from 22.5 s to 4.3 s, issue 25)."""
    import torch._functorch.config
    import torch._inductor.config

    path = Path(os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "torch-compile")))
    torch._inductor.config.fx_graph_cache = True
    torch._functorch.config.enable_autograd_cache = True
    return path


def stable_hash(data: Any, length: int = 16) -> str:
    """A short hash of JSON-serialisable ``data`` that does not depend on dict order or the Python process."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "w") -> None:
    """Write ``path`` through ``write(handle)`` into a temporary file of the same folder, then rename it over: a
    reader (another run, a crash's rerun) sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would make the file unreadable to other users
    try:
        with os.fdopen(fd, mode) as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
