"""What the tracker reporters share: feed one tracker's per-run sessions from the lifecycle hooks, for the runs whose
``RunOptions.report`` names it (``metabench run --report NAME``), and keep a tracker that is down or raises from ever
failing a run: its first error is one warning, and the tracker is left out for the rest of that run."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Protocol

from metabench import hookimpl


class Session(Protocol):
    """One run as a tracker sees it: opened at ``run_started`` (where the tracker's package is imported) and finished
    at ``run_finished``, both on the process that runs it (a Ray worker under ``--executor ray``)."""

    def step(self, step: int, metrics: dict[str, float]) -> None: ...

    def evaluation(self, split: str, scores: dict[str, Any]) -> None: ...

    def finish(self, record: dict[str, Any]) -> None: ...


class Tracker:
    """A plugin object (its methods are the hook implementations) that opens a :class:`Session` per enabled run."""

    def __init__(self, name: str, open_session: Callable[[Any, Any], Session]):
        self.name, self.open_session = name, open_session
        self.sessions: dict[str, Session] = {}  # by config hash: the runs of this process being tracked

    def _guard(self, spec: Any, action: Callable[[], None]) -> None:
        try:
            with warnings.catch_warnings():  # the trackers' own deprecation chatter is not the user's business
                warnings.simplefilter("ignore")
                action()
        except Exception as error:  # noqa: BLE001 - a tracker must never fail a run
            self.sessions.pop(spec.config_hash, None)
            warnings.warn(
                f"--report {self.name}: {type(error).__name__}: {error}; not reporting run {spec.label} any further",
                RuntimeWarning,
                stacklevel=2,
            )

    def _call(self, spec: Any, method: str, *args: Any) -> None:
        session = self.sessions.get(spec.config_hash)
        if session is not None:
            self._guard(spec, lambda: getattr(session, method)(*args))

    @hookimpl
    def metabench_run_started(self, spec: Any, options: Any) -> None:
        if self.name in options.report:
            self._guard(spec, lambda: self.sessions.__setitem__(spec.config_hash, self.open_session(spec, options)))

    @hookimpl
    def metabench_step_finished(self, spec: Any, step: int, metrics: dict[str, float]) -> None:
        self._call(spec, "step", step, metrics)

    @hookimpl
    def metabench_evaluation_finished(self, spec: Any, split: str, scores: dict[str, Any]) -> None:
        self._call(spec, "evaluation", split, scores)

    @hookimpl
    def metabench_run_finished(self, spec: Any, record: dict[str, Any]) -> None:
        self._call(spec, "finish", record)
        self.sessions.pop(spec.config_hash, None)


def scalars(scores: dict[str, Any]) -> dict[str, float]:
    """The numbers of an evaluation's scores worth a curve: mean, ci95, std and the probe points, not counts."""
    return {
        k: float(v)
        for k, v in scores.items()
        if k not in ("step", "n", "per_task") and isinstance(v, int | float) and not isinstance(v, bool)
    }


def run_name(spec: Any) -> str:
    """``benchmark-sampler-learner-strategy-seed=N-<hash8>``: readable, and distinct for runs that differ only in a
    value (a ``--set`` override)."""
    return f"{spec.benchmark}-{spec.label.replace('/', '-')}-{spec.config_hash[:8]}"
