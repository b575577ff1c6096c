"""One run: build the components of a :class:`RunSpec`, meta-train with meta-validation and checkpoints, evaluate on
the benchmark's fixed tasks, and write the JSON record.

A run that raises, whose loss is not finite, or whose scores, diagnostics or parameters are not finite becomes a
``failed`` record naming the culprit; a learner that cannot use the strategy (``incompatible`` gives a reason)
becomes ``not-applicable``. The record is assembled once, by :func:`metabench.schema.new`.
``KeyboardInterrupt`` is not caught: the last checkpoint stays and the rerun resumes it.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from metabench import probe, provenance, results, schema
from metabench.cache import cache_dir, stable_hash, use_compile_cache
from metabench.errors import ConfigError
from metabench.evaluation import evaluate_tasks, fixed_tasks, metric_of, task_shape
from metabench.interfaces import Dataset, MetaLearner, Params, SamplerContext, Strategy, TaskSource
from metabench.metrics import signed
from metabench.registry import Registry
from metabench.runspec import EvalProtocol, RunSpec
from metabench.seeds import derive_seed, make_generator
from metabench.statistics import summarize
from metabench.tasks import TaskBatch

_datasets: dict[str, tuple[str, Dataset]] = {}


@dataclass(frozen=True)
class RunOptions:
    """How (not what) to run one run: plain data, shipped with each :class:`RunSpec` to wherever it runs. Which runs
    of a grid run is the plan's business (:class:`metabench.plan.Selection`)."""

    out: Path = Path("results")
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # torch CPU threads for CPU runs; None: torch's default
    progress: bool = True
    # reporters that lifecycle hooks should feed (``--report tensorboard,mlflow``); hooks receive these options
    report: tuple[str, ...] = ()
    checkpoint_dir: Path | None = None  # None: <out>/checkpoints; on a cluster, a path every node shares
    # torch.compile the learner's per-task meta-gradient (--compile, [training] compile): how, not what, so out of
    # the config hash; in the provenance when true (not bit-identical to eager: provenance.of)
    compile: bool = False

    @property
    def checkpoints(self) -> Path:
        """The folder of this grid's checkpoints."""
        return self.checkpoint_dir or self.out / "checkpoints"


class NonFiniteLoss(RuntimeError):
    pass


class NonFinite(RuntimeError):
    """A score, diagnostic or parameter of a finished run is NaN or infinite: the run is ``failed``."""


class NotApplicable(Exception):
    """The learner declined the run (:meth:`MetaLearner.incompatible`): recorded as ``not-applicable``."""


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``; anything else is a :class:`ConfigError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(f"device '{name}': not a device; use auto, cpu, cuda or cuda:N") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}': CUDA is not available here; use cpu or auto")
    return device


def prepare_cpu(device: torch.device, threads: int | None) -> None:
    """For a CPU run: give torch ``threads`` CPU threads (``None``: leave torch's default) and keep freed memory in
    the process's heap (:func:`keep_freed_memory`)."""
    if device.type != "cpu":
        return
    if threads:
        torch.set_num_threads(threads)
    keep_freed_memory()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> None:
    """Make glibc keep freed blocks for the next allocation instead of handing them back to the kernel.

    By default glibc serves blocks of a few MB by ``mmap`` (or trims them off the heap) and returns them when freed, so
    every meta-step maps its activations afresh: 500,000 page faults a step, 15% of a paper-scale MAML step's time
    on the CPU, and a speed that depends on what the process allocated before (benchmarks/README.md). Blocks up to
    glibc's largest mmap threshold (32 MiB) now come from the heap, which is trimmed only above 1 GiB of free top.
    Numbers do not change: only where the memory comes from. Linux only (musl's ``mallopt`` does nothing)."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None) if sys.platform == "linux" else None
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        mallopt(_M_TRIM_THRESHOLD, 1 << 30)


def run(spec: RunSpec, registry: Registry, options: RunOptions) -> dict[str, Any]:
    """Run ``spec`` to its record and return it; the executor writes it (on the driver, when the run is remote).

    Checkpoints go to ``options.checkpoints`` while it trains, so that a rerun resumes an interrupted run. The
    lifecycle hooks of the run, ``metabench_run_finished`` included, fire here, on the process that runs it."""
    device = resolve_device(options.device)
    prepare_cpu(device, options.threads)
    started = time.time()
    registry.fire("metabench_run_started", spec=spec, options=options)
    facts: dict[str, Any] = {}
    origin: dict[str, Any] = {}
    outcome, status, error, trace, code_hash = None, "ok", None, None, ""
    try:  # provenance too: a worker may lack a plugin the driver had, which makes a failed run, not a crash
        origin = provenance.of(spec, registry, device.type, options.compile)
        code_hash = provenance.code_hash(origin)
        bound = build(spec, registry, device, progress=options.progress, facts=facts, compile=options.compile)
        outcome = train_and_evaluate(spec, registry, options, bound, code_hash)
        bad = schema.nonfinite(outcome)
        if bad:
            raise NonFinite(f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''} not finite")
    except NotApplicable as reason:
        status, error, outcome = "not-applicable", str(reason), None
    except Exception as failure:  # noqa: BLE001 - a failed run is data; the other runs go on
        status, error, outcome = "failed", f"{type(failure).__name__}: {failure}", None
        trace = "".join(traceback.format_exception(failure)[-6:])
    record = schema.new(
        spec,
        provenance=origin,
        code_hash=code_hash,
        environment=results.environment(device),
        started_at=datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        wall_seconds=time.time() - started,
        status=status,
        error=error,
        facts=facts,
        outcome=outcome,
        traceback=trace,
    )
    registry.fire("metabench_run_finished", spec=spec, record=record, options=options)
    return record


def replay_probe(spec: RunSpec, registry: Registry, options: RunOptions, steps: int) -> dict[str, Any]:
    """The first ``steps`` meta-steps of ``spec``, built and trained as :func:`run` does, with its probe and
    ``tasks_hash``; checkpoints go to ``options.checkpoints``, which should be a throwaway folder."""
    facts: dict[str, Any] = {}
    device = resolve_device(options.device)
    prepare_cpu(device, options.threads)
    bound = build(spec, registry, device, progress=options.progress, facts=facts, compile=options.compile)
    training = train_and_evaluate(spec, registry, options, bound, "replay", stop_at=steps)
    return {"probe": training.get("probe"), "tasks_hash": facts.get("tasks_hash")}


def tasks_hash(tasks: TaskBatch) -> str:
    """A hash of the task tensors (values, shapes and dtypes): equal hashes, identical evaluation tasks."""
    digest = hashlib.sha256(str(tasks.n_way).encode())
    for tensor in (tasks.support_x, tasks.support_y, tasks.query_x, tasks.query_y):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{data.dtype}{tuple(data.shape)}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()[:16]


def dataset_of(spec: RunSpec, registry: Registry) -> tuple[str, Dataset]:
    """The dataset of ``spec`` and its stable key; loaded once per process, whatever the number of runs."""
    key = f"{spec.dataset.name}-{stable_hash(spec.dataset.params, 8)}"
    if key not in _datasets:
        dataset = registry.build("dataset", spec.dataset.name, spec.dataset.params, where=f"{spec.benchmark}: dataset")
        _datasets[key] = (key, dataset)
    return _datasets[key]


def _build(registry: Registry, kind: str, spec: RunSpec, **context: Any) -> Any:
    ref = getattr(spec, kind)
    return registry.build(kind, ref.name, ref.params, where=f"{spec.benchmark}: {kind}", **context)


def _quiet(stage: str) -> None:
    pass


@dataclass
class Bound:
    """A run's components built and bound on its data, its fixed tasks drawn and its parameters initialised: all
    that can be known before its first meta-step."""

    learner: MetaLearner
    strategy: Strategy
    dataset: Dataset
    backbone: Any
    params: Params
    train_source: TaskSource
    val_tasks: TaskBatch
    test_tasks: TaskBatch
    probe_tasks: TaskBatch  # meta-train tasks drawn once, to follow the scores on what the learner trains on
    metric: dict[str, Any]
    left_untrained: list[str]  # SamplerContext.left_untrained: what a checking build did not train


def build(
    spec: RunSpec,
    registry: Registry,
    device: torch.device,
    *,
    progress: bool,
    facts: dict[str, Any],
    stage: Callable[[str], None] = _quiet,
    checking: bool = False,
    compile: bool = False,
) -> Bound:
    """Build and bind every component of ``spec`` as its run does, up to its first meta-step. ``facts`` receives what
    the record needs even when the run stops early; ``stage`` hears where the building is (for preflight's messages);
    ``compile``: the learner's meta-gradient is compiled (:func:`compile_learner`).

    Raises :class:`NotApplicable` when the learner declines the strategy, :class:`ConfigError` when the data cannot
    give the benchmark's tasks."""
    stage("building the learner and the strategy")
    learner: MetaLearner = _build(registry, "learner", spec)
    strategy: Strategy = _build(registry, "strategy", spec)
    facts["strategy_plain"] = bool(getattr(strategy, "plain", False))
    stage("building the dataset")
    dataset_key, dataset = dataset_of(spec, registry)
    _check_protocol(spec, dataset)
    reason = learner.incompatible(strategy, spec.strategy.name, dataset.task_type)
    if reason:
        raise NotApplicable(reason)

    context = SamplerContext(device, spec.seed, cache_dir(), dataset_key, registry, progress, checking=checking)
    protocol = spec.protocol
    shape = task_shape(protocol, dataset.task_type)
    train_split = dataset.split("train")
    sampler = _build(registry, "sampler", spec)
    sampler_key = f"{spec.sampler.name}:{spec.sampler.params_json}"
    with _protocol_named(protocol):
        stage(f"sampler '{spec.sampler.label}' bound on the train split")
        train_source = sampler.bind(train_split, shape, context, role="train")
        stage(f"sampler '{spec.sampler.label}' bound on the val split")
        val_tasks = fixed_tasks(dataset, sampler, sampler_key, "val", protocol.val_tasks, protocol, context)
        stage(f"sampler '{spec.sampler.label}' bound on the test split")
        test_tasks = fixed_tasks(dataset, sampler, sampler_key, "test", protocol.eval_tasks, protocol, context)
        facts["tasks_hash"] = tasks_hash(test_tasks)
        stage(f"sampler '{spec.sampler.label}' bound on the train split")
        # Meta-train tasks drawn once, to follow pre/post-adaptation scores on what the learner trains on (MetaMix
        # Fig. 2).
        probe_tasks = train_source(protocol.val_tasks, make_generator(protocol.eval_seed, "train-probe"))

    stage(f"backbone '{spec.backbone.label}'")
    out_dim = shape.n_way or train_split.y_dim
    with torch.random.fork_rng(devices=[]):  # a backbone initialises from the global generator: pin it to the seed
        torch.manual_seed(derive_seed(spec.seed, "backbone"))
        backbone = _build(registry, "backbone", spec, input_shape=dataset.input_shape, out_dim=out_dim).to(device)
    params = learner.init_params(backbone, make_generator(spec.seed, "init"))
    if compile:
        compile_learner(learner, spec.learner.name)
    metric = metric_of(dataset.task_type)
    return Bound(
        learner,
        strategy,
        dataset,
        backbone,
        params,
        train_source,
        val_tasks,
        test_tasks,
        probe_tasks,
        metric,
        context.left_untrained,
    )


def compile_learner(learner: MetaLearner, name: str) -> None:
    """Switch on the compiled meta-gradient of ``learner`` (its optional ``compile_meta_gradient(name)``), torch's
    compile caches under the metabench cache folder; a learner without one runs eager, after a warning."""
    enable = getattr(learner, "compile_meta_gradient", None)
    if enable is None:
        warnings.warn(f"learner '{name}' has no compiled path (no compile_meta_gradient): it runs eager", stacklevel=2)
        return
    use_compile_cache()
    # The previous run's graphs cannot serve this one (their guards name its objects) and would count toward
    # Dynamo's limit of 8 graphs per function, past which a grid's later runs would silently run eager.
    torch._dynamo.reset()
    enable(name)


@contextmanager
def _protocol_named(protocol: EvalProtocol) -> Iterator[None]:
    """A sampler that cannot give the benchmark's tasks says why; the task shape comes from [protocol]: say so."""
    try:
        yield
    except ConfigError as error:
        keys = f"n_way = {protocol.n_way}, k_shot = {protocol.k_shot}, k_query = {protocol.k_query}"
        raise ConfigError(f"[protocol] {keys}: {error}") from error


def _check_protocol(spec: RunSpec, dataset: Dataset) -> None:
    """A dataset with its own evaluation tasks (``Dataset.evaluation_tasks``) must match the benchmark's protocol."""
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


def train_and_evaluate(
    spec: RunSpec, registry: Registry, options: RunOptions, bound: Bound, code_hash: str, stop_at: int | None = None
) -> dict[str, Any]:
    """Meta-train a bound run (resuming its checkpoint), then evaluate it on the fixed test tasks: its outcome. With
    ``stop_at``, training stops after that many meta-steps and the outcome is the training part, probe included."""
    learner, protocol, params = bound.learner, spec.protocol, bound.params
    training: dict[str, Any] = {"steps": 0, "steps_per_s": None, "curves": [], "best_step": None}
    if learner.meta_trains and spec.training.meta_steps > 0:
        trainer = _Trainer(spec, registry, options, learner, bound.strategy, params, bound.metric, code_hash, stop_at)
        params, training = trainer.train(bound.train_source, bound.val_tasks, bound.probe_tasks)
    if stop_at is not None:
        return training
    for name, p in params.items():
        if not bool(torch.isfinite(p).all()):
            raise NonFinite(f"parameter '{name}' not finite after meta-training")

    chunk = protocol.eval_chunk
    test_tasks = bound.test_tasks
    test = evaluate_tasks(learner, params, test_tasks, chunk)
    probe = evaluate_tasks(learner, params, bound.probe_tasks, chunk)
    n_diag = min(spec.training.diagnostic_tasks, test_tasks.n_tasks)
    diagnostics = learner.diagnostics(params, test_tasks.select(slice(0, n_diag))) if n_diag else {}
    summary = {**summarize(test["post"]), "per_task": [round(float(s), 6) for s in test["post"]]}
    registry.fire("metabench_evaluation_finished", spec=spec, split="test", scores={**summary, "step": None})
    return {
        "metric": bound.metric,
        "metrics": {"test": summary, **{f"test_{k}": summarize(v) for k, v in test.items() if k != "post"}},
        "meta_overfitting": {
            "meta_train": {k: summarize(v)["mean"] for k, v in probe.items()},
            "meta_test": {k: summarize(v)["mean"] for k, v in test.items()},
        },
        "diagnostics": {k: float(v) for k, v in diagnostics.items()},
        **training,
    }


def resuming_text(spec: RunSpec, step: int) -> str:
    """What the terminal says of a run that goes on from its checkpoint (on the driver too, for a remote run)."""
    return f"{spec.label}: resuming at step {step} (from its checkpoint)"


@dataclass
class _TrainState:
    """Everything a checkpoint holds beyond the tensors: where training is and what it has seen."""

    step: int = 0
    train_seconds: float = 0.0
    best_score: float | None = None
    best_step: int | None = None
    curves: list[dict[str, Any]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    resumed_from: int | None = None
    probe: dict[str, Any] | None = None  # :mod:`metabench.probe`; None when resumed from a checkpoint without one


class _Trainer:
    """Adam on the meta-parameters, meta-validation keeping the best weights, checkpoints to resume from."""

    def __init__(
        self,
        spec: RunSpec,
        registry: Registry,
        options: RunOptions,
        learner: MetaLearner,
        strategy: Strategy,
        params: Params,
        metric: dict[str, Any],
        code_hash: str,
        stop_at: int | None = None,
    ):
        self.spec, self.registry, self.options, self.code_hash = spec, registry, options, code_hash
        self.stop_at = stop_at
        self.learner, self.strategy, self.params, self.metric = learner, strategy, params, metric
        self.optimizer = torch.optim.Adam(list(params.values()), lr=spec.training.meta_lr)
        self.task_rng = make_generator(spec.seed, "tasks")
        self.loss_rng = make_generator(spec.seed, "strategy")  # strategies draw on the CPU (interfaces.Strategy)
        self.best: Params | None = None
        self.state = _TrainState(probe={"steps": stop_at or probe.steps_of(spec.training.meta_steps), "params": []})

    def train(self, source: TaskSource, val_tasks: TaskBatch, probe_tasks: TaskBatch) -> tuple[Params, dict[str, Any]]:
        settings = self.spec.training
        self._restore()
        bar = tqdm(
            total=settings.meta_steps,
            initial=self.state.step,
            desc=self.spec.label,
            leave=False,
            disable=not self.options.progress,
            dynamic_ncols=True,
        )
        with bar:
            if self.state.resumed_from:
                bar.write(resuming_text(self.spec, self.state.resumed_from))
                self.registry.fire("metabench_run_resumed", spec=self.spec, step=self.state.resumed_from)
            while self.state.step < (self.stop_at or settings.meta_steps):
                loss = self._step(source)
                self._observe(val_tasks)
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                bar.update()
                step = self.state.step
                if step % settings.validate_every == 0 or step == settings.meta_steps:
                    self._validate(val_tasks, probe_tasks)
                # the last step too, so that an interrupted final evaluation does not redo the training
                if step % settings.checkpoint_every == 0 or step == settings.meta_steps:
                    self._checkpoint()
        state = self.state
        return self.best or self.params, {
            "steps": state.step,
            "steps_per_s": state.step / state.train_seconds if state.train_seconds else None,
            "curves": state.curves,
            "best_step": state.best_step,
            "resumed_from": state.resumed_from,
            "probe": state.probe if probe.complete(state.probe) else None,
        }

    def _step(self, source: TaskSource) -> float:
        started = time.perf_counter()
        tasks = source(self.spec.training.meta_batch, self.task_rng)
        loss, metrics = self.learner.meta_loss(self.params, tasks, self.strategy, self.loss_rng)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteLoss(f"meta-loss is {value} at step {self.state.step + 1}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.state.train_seconds += time.perf_counter() - started
        self.state.step += 1
        self.state.losses.append(value)
        metrics = {"loss": value, **{k: float(v) for k, v in metrics.items()}}
        self.registry.fire("metabench_step_finished", spec=self.spec, step=self.state.step, metrics=metrics)
        return value

    def _observe(self, val_tasks: TaskBatch) -> None:
        if self.state.probe is None:
            return
        chunk = self.spec.protocol.eval_chunk

        def score(params: Params) -> dict[str, torch.Tensor]:
            return evaluate_tasks(self.learner, params, val_tasks.select(slice(0, probe.TASKS)), chunk)

        probe.observe(self.state.probe, self.state.step, self.params, score)

    def _validate(self, val_tasks: TaskBatch, probe_tasks: TaskBatch) -> None:
        chunk = self.spec.protocol.eval_chunk
        val = evaluate_tasks(self.learner, self.params, val_tasks, chunk)
        probe = evaluate_tasks(self.learner, self.params, probe_tasks, chunk)
        score = summarize(val["post"])
        state = self.state
        point = {
            "step": state.step,
            "loss": sum(state.losses) / len(state.losses) if state.losses else None,
            "train_pre": float(probe["pre"].mean()),
            "train_post": float(probe["post"].mean()),
            "val_pre": float(val["pre"].mean()),
            "val_post": score["mean"],
        }
        state.curves.append(point)
        state.losses = []
        goal = self.metric["goal"]
        if state.best_score is None or signed(goal, score["mean"]) > signed(goal, state.best_score):
            state.best_score, state.best_step = score["mean"], state.step
            self.best = {name: p.detach().clone() for name, p in self.params.items()}
        self.registry.fire("metabench_evaluation_finished", spec=self.spec, split="val", scores={**score, **point})

    def _checkpoint(self) -> None:
        # plain tensors, numbers and lists only: loadable with weights_only=True (results.load_checkpoint)
        results.save_checkpoint(
            self.options.checkpoints,
            self.spec,
            {
                "code_hash": self.code_hash,
                "params": {name: p.detach() for name, p in self.params.items()},
                "best": self.best,
                "optimizer": self.optimizer.state_dict(),
                "task_rng": self.task_rng.get_state(),
                "loss_rng": self.loss_rng.get_state(),
                "state": asdict(self.state),
            },
        )

    def _restore(self) -> None:
        checkpoint = results.load_checkpoint(self.options.checkpoints, self.spec)
        if checkpoint is None or checkpoint.get("code_hash") != self.code_hash:
            return  # none, unreadable, or written by other code: that training is not this run's
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(checkpoint["params"][name])
        best = checkpoint["best"]  # loaded on the CPU: back beside the parameters
        self.best = {name: p.to(self.params[name].device) for name, p in best.items()} if best else None
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.task_rng.set_state(checkpoint["task_rng"])
        self.loss_rng.set_state(checkpoint["loss_rng"])
        self.state = _TrainState(**checkpoint["state"])
        self.state.resumed_from = self.state.step
