"""Every hook metabench calls, one docstring each.

Two families:

* **Registration hooks** (``metabench_register_*``) are called once, when the registry loads the plugins of the
  entry-point group ``metabench``. Each receives a ``register`` callable bound to the calling plugin's distribution,
  so the registry knows who provides what. Call it once per component::

      @parameters(Param("lr", float, 0.1, "step size", low=0))
      class MyLearner: ...

      register("my-learner", MyLearner, summary="One line.")

  ``factory`` is a class or function whose parameters are declared on it with :func:`metabench.parameters`; the
  registry calls it with the validated parameters as keyword arguments (plus the context arguments of its kind,
  documented on each hook). A hook that raises, or registers a component with an invalid declaration, marks its plugin
  broken: none of its components is registered, and every other plugin keeps working.

* **Lifecycle hooks** are called while a benchmark runs, for loggers and reporters. They receive plain data
  (``RunSpec``, dicts of floats, JSON-ready records) and return nothing. They are called in pluggy's order
  (``tryfirst``, then the others, the last registered first, then ``trylast``; ``wrapper`` and ``hookwrapper``
  implementations around them), each isolated (:meth:`metabench.registry.Registry.fire`): one that raises is
  reported as a warning naming its plugin, once per run, and stops neither the run nor the other reporters. Every
  hook of a run fires on the process that runs it (a Ray worker under ``--executor ray``), so that what
  ``metabench_run_started`` opens, ``metabench_run_finished`` closes there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    from metabench.registry import Register
    from metabench.runner import RunOptions
    from metabench.runspec import RunSpec

hookspec = pluggy.HookspecMarker("metabench")


@hookspec
def metabench_register_datasets(register: Register) -> None:
    """Register datasets.

    Called once at registry load. ``factory(**params)`` returns a :class:`metabench.interfaces.Dataset`: image splits
    (``train``/``val``/``test`` as :class:`metabench.interfaces.ImageSplit`) or a regression task family.
    """


@hookspec
def metabench_register_samplers(register: Register) -> None:
    """Register task samplers.

    Called once at registry load. ``factory(**params)`` returns a :class:`metabench.interfaces.TaskSampler`, whose
    ``bind(split, shape, context)`` gives a callable drawing a :class:`metabench.tasks.TaskBatch` of ``n`` tasks from a
    ``torch.Generator``.
    """


@hookspec
def metabench_register_backbones(register: Register) -> None:
    """Register backbones (the networks learners adapt).

    Called once at registry load. ``factory(input_shape=..., out_dim=..., **params)`` returns a
    :class:`metabench.interfaces.Backbone`: an ``nn.Module`` whose forward runs from one mixable layer to another.
    """


@hookspec
def metabench_register_learners(register: Register) -> None:
    """Register meta-learners.

    Called once at registry load. ``factory(**params)`` returns a :class:`metabench.interfaces.MetaLearner`.
    """


@hookspec
def metabench_register_strategies(register: Register) -> None:
    """Register outer-loop data strategies (what the outer loss is computed on).

    Called once at registry load. ``factory(**params)`` returns a :class:`metabench.interfaces.Strategy`.
    """


@hookspec
def metabench_register_generative_models(register: Register) -> None:
    """Register generative models for unsupervised (LASIUM) task samplers.

    Called once at registry load. ``factory(image_shape=..., **params)`` returns a
    :class:`metabench.interfaces.GenerativeModel`; a plugin may return one that is already trained.
    """


@hookspec
def metabench_run_started(spec: RunSpec, options: RunOptions) -> None:
    """A run (one grid cell and seed) is about to meta-train. Receives its :class:`metabench.runspec.RunSpec` and the
    :class:`metabench.runner.RunOptions` it runs under (``options.out``; ``options.report``, the reporters the user
    enabled with ``--report``). Like every hook, an implementation may take only the arguments it needs."""


@hookspec
def metabench_run_resumed(spec: RunSpec, step: int) -> None:
    """A run goes on from its checkpoint after ``step`` meta-steps (an earlier attempt was interrupted), instead of
    starting over; fired on the process that runs it, before its next meta-step."""


@hookspec
def metabench_step_finished(spec: RunSpec, step: int, metrics: dict[str, float]) -> None:
    """A meta-training step finished. ``step`` counts from 1; ``metrics`` holds at least ``loss``."""


@hookspec
def metabench_evaluation_finished(spec: RunSpec, split: str, scores: dict[str, Any]) -> None:
    """An evaluation finished: meta-validation during training (``split="val"``) or the final one (``"test"``).

    ``scores`` holds the summary (``mean``, ``ci95``, ...) and the step at which it was taken.
    """


@hookspec
def metabench_run_finished(spec: RunSpec, record: dict[str, Any], options: RunOptions) -> None:
    """A run finished, successfully or not, on the process that ran it: close what ``metabench_run_started`` opened.
    ``record`` is its JSON record, which the executor then writes to ``options.out/runs/`` on the driver."""


@hookspec
def metabench_leaderboard_written(paths: list[Path]) -> None:
    """The leaderboard files (Markdown, CSV, plots) were written. Receives their paths."""
