"""Everything that can be known before training, checked before the first run: exit 2, nothing run, nothing written.

Each run about to start is built and bound on its data by the very function its run uses
(:func:`metabench.runner.build`: the dataset, the sampler bound in the train, val and test roles with the fixed tasks
drawn, the learner, the strategy, the backbone and its initial parameters; a generative model is left untrained,
``SamplerContext.checking``). Instead of training, each cell then does
one forward pass through every mixable layer of its backbone and one outer loss on a one-task batch, so that a
strategy's mixing layer the backbone lacks, a shape mismatch or a parameter the data cannot satisfy shows up here and
not after hours of meta-training. A dataset's own evaluation protocol (``Dataset.evaluation_tasks``) must match the
benchmark's. Cells the learner declines (``incompatible``) are fine: they are recorded as not applicable."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from metabench import runner
from metabench.errors import ConfigError, MetabenchError
from metabench.registry import Registry
from metabench.runspec import RunSpec
from metabench.seeds import make_generator


def check_writable(out: Path, flag: str = "--out") -> None:
    """``out`` is (or can be created as) a writable folder. Probed with a temporary file in its nearest existing
    folder, removed at once (permission bits alone do not tell, e.g. for root or read-only mounts)."""
    probe = out.absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{flag} {out}: {probe} is not a folder; give a folder for the results")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as error:
        raise ConfigError(
            f"{flag} {out}: cannot write in {probe} ({error.strerror or error}); give a folder you can write to"
        ) from error


def preflight(specs: Sequence[RunSpec], registry: Registry, options: runner.RunOptions, source: str) -> list[str]:
    """Raise one :class:`ConfigError` listing every problem of ``specs`` (from the file ``source``), if any; else
    return what the runs will train before their first meta-step, having no cached copy
    (``SamplerContext.left_untrained``), each once."""
    check_writable(options.out)
    try:
        device = runner.resolve_device(options.device)
    except ConfigError:  # the workers' device (e.g. CUDA under --executor ray), absent here: check cells on the CPU
        device = torch.device("cpu")
    problems: dict[str, list[str]] = {}  # problem -> the runs that have it
    untrained: dict[str, None] = {}
    with torch.random.fork_rng(devices=[]):  # whatever a component draws from the global generator, the runs do not see
        for spec in specs:
            stage = ["building the run"]
            try:
                untrained.update(dict.fromkeys(_check_cell(spec, registry, device, stage)))
            except MetabenchError as error:
                problems.setdefault(str(error), []).append(spec.label)
            except Exception as error:  # noqa: BLE001 - any failure of a component before training is the user's
                problems.setdefault(f"{stage[-1]}: {type(error).__name__}: {error}", []).append(spec.label)
    if problems:
        lines = [f"{source}: {problem} (in {_runs(labels)})" for problem, labels in problems.items()]
        raise ConfigError(
            f"preflight found {len(lines)} problem{'s' if len(lines) > 1 else ''} before any run (nothing was run "
            "or written):\n  " + "\n  ".join(lines)
        )
    return list(untrained)


def _runs(labels: list[str]) -> str:
    shown = ", ".join(labels[:3])
    return f"{shown} and {len(labels) - 3} more runs" if len(labels) > 3 else shown


def _check_cell(spec: RunSpec, registry: Registry, device: torch.device, stage: list[str]) -> list[str]:
    """Build and bind ``spec`` as its run will (:func:`metabench.runner.build`), then run it once on one task instead
    of training it; ``stage`` follows where it is. Returns what the build left untrained."""
    try:
        bound = runner.build(spec, registry, device, progress=False, facts={}, stage=stage.append, checking=True)
    except runner.NotApplicable:
        return []  # recorded as not applicable, not an error
    backbone, learner, strategy = bound.backbone, bound.learner, bound.strategy
    tasks = bound.train_source(1, make_generator(spec.seed, "preflight"))
    stage.append(f"strategy '{spec.strategy.label}' planning on the backbone's layers")
    # the strategy's plan checks its mixing layers against the backbone's; then every layer is run once
    strategy.plan(make_generator(spec.seed, "preflight-plan"), tasks, backbone.n_layers)
    stage.append(f"backbone '{spec.backbone.label}' forward through each mixable layer")
    with torch.no_grad():
        x = tasks.support_x[0]
        for layer in range(backbone.n_layers):
            backbone(backbone(x, 0, layer), layer)
    stage.append(f"learner '{spec.learner.label}' outer loss on one task with strategy '{spec.strategy.label}'")
    loss, _ = learner.meta_loss(bound.params, tasks, strategy, make_generator(spec.seed, "preflight-loss"))
    if loss.dim() != 0:
        raise ConfigError(f"learner '{spec.learner.name}': meta_loss returned shape {tuple(loss.shape)}, not a scalar")
    return bound.left_untrained
