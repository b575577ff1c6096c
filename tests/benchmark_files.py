"""Tiny benchmark files for tests, one place each, and the CLI that runs them (in-process and as a subprocess).

``benchmark_toml(kind, {"training.meta_steps": 6, "protocol.k_shot": None})`` is one of three tiny benchmarks with
dotted-key overrides (``None`` drops the key). The text it renders is plain ``key = value`` lines, so a test that
needs a malformed file can still ``str.replace`` a line it knows."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from metabench.cli import main

Sections = dict[str, dict[str, object]]

# fake_components.py: a 3-way image dataset, an MLP and a learner that can fail or go NaN on request (seconds).
FAKE: Sections = {
    "benchmark": {"name": "fake"},
    "dataset": {"name": "fake-images"},
    "backbone": {"name": "fake-mlp"},
    "protocol": {"n_way": 3, "k_shot": 1, "k_query": 2, "eval_tasks": 12, "val_tasks": 4, "eval_chunk": 6},
    "training": {"meta_steps": 4, "meta_batch": 2, "meta_lr": 0.05, "validate_every": 2, "checkpoint_every": 2},
    "grid": {"samplers": ["standard"], "learners": ["fake-learner"], "strategies": ["query", "support"], "seeds": [0]},
}

# The built-in Omniglot subset in plugins/datasets/data and a two-block conv4 with four filters.
OMNIGLOT: Sections = {
    "benchmark": {"name": "tiny-omniglot"},
    "dataset": {"name": "omniglot"},
    "backbone": {"name": "conv4", "params": {"filters": 4, "blocks": 2}},
    "protocol": {"n_way": 3, "k_shot": 1, "k_query": 1, "eval_tasks": 6, "val_tasks": 2},
    "training": {"meta_steps": 2, "meta_batch": 2, "validate_every": 1, "checkpoint_every": 1, "diagnostic_tasks": 2},
    "grid": {"samplers": ["standard"], "learners": ["protonet"], "strategies": ["query"], "seeds": [0]},
}

# Sinusoid regression with a one-hidden-layer MLP of width 8.
SINE: Sections = {
    "benchmark": {"name": "tiny-sine"},
    "dataset": {"name": "sinusoid"},
    "backbone": {"name": "mlp", "params": {"widths": [8]}},
    "protocol": {"k_shot": 5, "k_query": 5, "eval_tasks": 10, "val_tasks": 4},
    "training": {"meta_steps": 4, "meta_batch": 2, "validate_every": 2, "checkpoint_every": 2, "diagnostic_tasks": 2},
    "grid": {
        "samplers": ["standard"],
        "learners": ["maml", "anil"],
        "strategies": ["query", "metamix"],
        "seeds": [0],
    },
}

KINDS: dict[str, Sections] = {"fake": FAKE, "omniglot": OMNIGLOT, "sine": SINE}


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(_value, value)) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{key} = {_value(item)}" for key, item in value.items()) + " }"
    return repr(value)


def benchmark_toml(kind: str, overrides: Mapping[str, object] | None = None) -> str:
    """The tiny benchmark ``kind`` (a key of ``KINDS``) with ``overrides``: dotted ``section.key`` names (the section
    may be dotted too, ``params.learner.maml.inner_lr``) to values; ``None`` removes the key, an emptied section is
    left out."""
    sections = {name: dict(table) for name, table in KINDS[kind].items()}
    for dotted, value in (overrides or {}).items():
        section, key = dotted.rsplit(".", 1)
        table = sections.setdefault(section, {})
        if value is None:
            del table[key]
        else:
            table[key] = value
    return "\n".join(
        f"[{name}]\n" + "".join(f"{key} = {_value(value)}\n" for key, value in table.items())
        for name, table in sections.items()
        if table
    )


def write_benchmark(path: Path, kind: str, overrides: Mapping[str, object] | None = None) -> Path:
    path.write_text(benchmark_toml(kind, overrides))
    return path


def run(*args: str | Path) -> int:
    """``metabench run ARGS`` in this process, on the CPU, without progress bars."""
    return main(["run", *map(str, args), "--device", "cpu", "--no-progress"])


def metabench_process(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``metabench ARGS`` in a fresh interpreter: entry points as installed now, output captured."""
    return subprocess.run([sys.executable, "-m", "metabench.cli", *map(str, args)], capture_output=True, text=True)


# The fake benchmark as a 12-cell grid leaning on defaults (no k_shot, no meta_batch), with shared and per-entry
# learner params and a profile: test_config.py and test_ux.py load it.
FAKE_GRID = benchmark_toml(
    "fake",
    {
        "protocol.k_shot": None,
        "protocol.eval_tasks": 40,
        "protocol.val_tasks": None,
        "protocol.eval_chunk": None,
        "training.meta_steps": 20,
        "training.meta_batch": None,
        "training.meta_lr": 0.01,
        "training.validate_every": None,
        "training.checkpoint_every": None,
        "grid.learners": ["fake-learner", {"name": "fake-learner", "label": "fails", "params": {"fail_at": 3}}],
        "grid.seeds": [0, 1, 2],
        "params.learner.fake-learner.nan_at": 7,
        "profiles.quick.training.meta_steps": 5,
        "profiles.quick.grid.seeds": [0],
    },
)
