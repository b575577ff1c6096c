"""Built-in reporters: implement lifecycle hooks only.

``jsonl``: when ``$METABENCH_LOG`` names a file, every lifecycle event is appended to it as one JSON line (run
started, each meta-step's metrics, each evaluation, run finished without the per-task scores, leaderboard written),
for following a long benchmark with ``tail -f`` or loading the training curves into a notebook.

The trackers enabled with ``metabench run --report tensorboard,mlflow`` are their own modules and entry points:
``tensorboard.py`` and ``mlflow.py``, on the shared plumbing of ``tracking.py``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from metabench import hookimpl


def _log(event: str, **data: Any) -> None:
    path = os.environ.get("METABENCH_LOG")
    if not path:
        return
    line = json.dumps({"time": round(time.time(), 3), "event": event, **data}, default=str)
    with open(path, "a") as handle:
        handle.write(line + "\n")


@hookimpl
def metabench_run_started(spec: Any) -> None:
    _log("run_started", run=spec.config_hash, label=spec.label)


@hookimpl
def metabench_step_finished(spec: Any, step: int, metrics: dict[str, float]) -> None:
    _log("step_finished", run=spec.config_hash, step=step, metrics=metrics)


@hookimpl
def metabench_evaluation_finished(spec: Any, split: str, scores: dict[str, Any]) -> None:
    summary = {k: v for k, v in scores.items() if k != "per_task"}
    _log("evaluation_finished", run=spec.config_hash, split=split, scores=summary)


@hookimpl
def metabench_run_finished(spec: Any, record: dict[str, Any]) -> None:
    test = (record.get("metrics") or {}).get("test", {})
    _log(
        "run_finished",
        run=spec.config_hash,
        status=record["status"],
        error=record.get("error"),
        mean=test.get("mean"),
        ci95=test.get("ci95"),
    )


@hookimpl
def metabench_leaderboard_written(paths: list[Path]) -> None:
    _log("leaderboard_written", paths=[str(p) for p in paths])
