"""Everything that can be known before training, checked before the first run: exit 2, nothing run, nothing written.

Every distinct dataset, sampler (bound in the train, val and test roles), backbone, learner and strategy of the runs
about to start is built and bound on its data; each cell does one forward pass through every mixable layer of its
backbone and one outer loss on a one-task batch, so that a strategy's mixing layer the backbone lacks, a shape
mismatch or a parameter the data cannot satisfy shows up here and not after hours of meta-training. A dataset's own
evaluation protocol (``Dataset.evaluation_tasks``) must match the benchmark's. Cells the learner declines
(``incompatible``) are fine: they are recorded as not applicable.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from metabench import runner
from metabench.cache import cache_dir
from metabench.errors import ConfigError, MetabenchError
from metabench.evaluation import task_shape
from metabench.interfaces import SamplerContext
from metabench.registry import Registry
from metabench.runspec import RunSpec
from metabench.seeds import derive_seed, make_generator

ROLES = ("train", "val", "test")


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


def preflight(specs: Sequence[RunSpec], registry: Registry, options: runner.RunOptions, source: str) -> None:
    """Raise one :class:`ConfigError` listing every problem of ``specs`` (from the file ``source``), if any."""
    check_writable(options.out)
    try:
        device = runner.resolve_device(options.device)
    except ConfigError:  # the workers' device (e.g. CUDA under --executor ray), absent here: check cells on the CPU
        device = torch.device("cpu")
    problems: dict[str, list[str]] = {}  # problem -> the runs that have it
    with torch.random.fork_rng(devices=[]):
        for spec in specs:
            stage = ["building the dataset"]
            try:
                _check_cell(spec, registry, device, stage)
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


def _runs(labels: list[str]) -> str:
    shown = ", ".join(labels[:3])
    return f"{shown} and {len(labels) - 3} more runs" if len(labels) > 3 else shown


def _check_cell(spec: RunSpec, registry: Registry, device: torch.device, stage: list[str]) -> None:
    """Build and bind every component of ``spec`` and run it once on one task; ``stage`` follows where it is."""
    key, dataset = runner.dataset_of(spec, registry)
    protocol = spec.protocol
    _check_protocol(spec, dataset)
    shape = task_shape(protocol, dataset.task_type)
    context = SamplerContext(device, spec.seed, cache_dir(), key, registry, False)
    sampler = registry.build("sampler", spec.sampler.name, spec.sampler.params, where=f"sampler '{spec.sampler.label}'")
    sources = {}
    for role in ROLES:
        if role != "train" and dataset.evaluation_tasks(role) is not None:
            continue
        stage.append(f"sampler '{spec.sampler.label}' bound on the {role} split")
        try:
            bound = sampler.bind(dataset.split(role), shape, context, role=role)
            bound(1, make_generator(protocol.eval_seed, "preflight", role))  # one task: the split can give such tasks
        except ConfigError as error:  # the task shape comes from [protocol]: say so beside the sampler's reason
            keys = f"n_way = {protocol.n_way}, k_shot = {protocol.k_shot}, k_query = {protocol.k_query}"
            raise ConfigError(f"[protocol] {keys}: {error}") from error
        sources[role] = bound
    stage.append("building the learner and the strategy")
    learner = registry.build("learner", spec.learner.name, spec.learner.params, where=f"learner '{spec.learner.label}'")
    strategy = registry.build(
        "strategy", spec.strategy.name, spec.strategy.params, where=f"strategy '{spec.strategy.label}'"
    )
    if learner.incompatible(strategy, spec.strategy.name, dataset.task_type):
        return  # recorded as not applicable, not an error
    stage.append(f"backbone '{spec.backbone.label}'")
    out_dim = shape.n_way or dataset.split("train").y_dim
    torch.manual_seed(derive_seed(spec.seed, "backbone"))
    backbone = registry.build(
        "backbone",
        spec.backbone.name,
        spec.backbone.params,
        where=f"backbone '{spec.backbone.label}'",
        input_shape=dataset.input_shape,
        out_dim=out_dim,
    ).to(device)
    params = learner.init_params(backbone, make_generator(spec.seed, "init"))
    tasks = sources["train"](1, make_generator(spec.seed, "preflight"))
    stage.append(f"strategy '{spec.strategy.label}' planning on the backbone's layers")
    # the strategy's plan checks its mixing layers against the backbone's; then every layer is run once
    strategy.plan(make_generator(spec.seed, "preflight-plan"), tasks, backbone.n_layers)
    stage.append(f"backbone '{spec.backbone.label}' forward through each mixable layer")
    with torch.no_grad():
        x = tasks.support_x[0]
        for layer in range(backbone.n_layers):
            backbone(backbone(x, 0, layer), layer)
    stage.append(f"learner '{spec.learner.label}' outer loss on one task with strategy '{spec.strategy.label}'")
    loss, _ = learner.meta_loss(params, tasks, strategy, make_generator(spec.seed, "preflight-loss"))
    if loss.dim() != 0:
        raise ConfigError(f"learner '{spec.learner.name}': meta_loss returned shape {tuple(loss.shape)}, not a scalar")


def _check_protocol(spec: RunSpec, dataset: Any) -> None:
    protocol = spec.protocol
    for role in ("val", "test"):
        tasks = dataset.evaluation_tasks(role)
        if tasks is None:
            continue
        n_way = tasks.n_way
        k_shot = tasks.support_x.shape[1] // n_way if n_way else tasks.support_x.shape[1]
        if (n_way is not None and n_way != protocol.n_way) or k_shot != protocol.k_shot:
            raise ConfigError(
                f"protocol n_way = {protocol.n_way}, k_shot = {protocol.k_shot}: dataset '{spec.dataset.name}' "
                f"evaluates its {role} split on its own fixed tasks, {n_way}-way {k_shot}-shot; set [protocol] "
                f"n_way = {n_way} and k_shot = {k_shot}, or use a dataset without its own protocol"
            )
