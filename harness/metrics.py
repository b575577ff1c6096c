"""What a score means: a metric's goal (maximize, minimize, or a target value) and scores signed by it.

A run record declares its metric as ``{"name": "mse", "goal": "minimize"}``; a target is ``{"target": 5.0}`` (the
toy regression's slope, whose truth is 5.0: closer is better). Every ranking, bolding and best-step choice compares
:func:`signed` scores, where larger is always better, so no reader needs to know which way a metric points.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

import numpy as np

from metabench.errors import MetabenchError

Goal = Literal["maximize", "minimize"] | dict[str, float]
_DIRECTIONS = ("maximize", "minimize")
Scores = TypeVar("Scores", float, np.ndarray)


def goal_of(metric: Mapping[str, Any]) -> Goal:
    """The goal a metric record declares; records written before goals existed say ``higher_is_better``."""
    if "goal" not in metric:
        return "maximize" if metric.get("higher_is_better", True) else "minimize"
    goal = metric["goal"]
    if goal in _DIRECTIONS:
        return goal
    if isinstance(goal, Mapping) and set(goal) == {"target"} and isinstance(goal["target"], int | float):
        return {"target": float(goal["target"])}
    allowed = '"maximize", "minimize" or {"target": <number>}'
    raise MetabenchError(f"metric {metric.get('name')!r}: goal {json.dumps(goal)} is not one of {allowed}")


def signed(goal: Goal, scores: Scores) -> Scores:
    """``scores`` mapped so that larger is better: as they are, negated, or minus the distance to the target."""
    if goal == "maximize":
        return scores
    if goal == "minimize":
        return -scores
    return -abs(scores - goal["target"])


def describe(goal: Goal) -> str:
    """The goal in words, for captions and column titles: ``closer to 5.0 is better``."""
    if isinstance(goal, dict):
        return f"closer to {goal['target']} is better"
    return "higher is better" if goal == "maximize" else "lower is better"


def display(name: str, goal: Goal) -> tuple[float, str]:
    """How scores of a metric are shown: accuracy in percent, any other metric as recorded, with its goal."""
    if name == "accuracy":
        return 100.0, "accuracy %"
    return 1.0, f"{name} ({describe(goal)})"


def target(goal: Goal) -> float | None:
    """The value a target goal aims at; ``None`` for a direction."""
    return goal["target"] if isinstance(goal, dict) else None
