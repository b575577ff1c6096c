"""Run a grid on Ray: one Ray task per run, its record returned to the driver and written there.

Workers need metabench and the grid's plugins installed, but no shared filesystem for records: the driver writes
every record into ``options.out`` (see :func:`metabench.executor.finish`). Checkpoints are written by the workers into
``options.checkpoints``; on a cluster, make that a path every node shares so that a retried task resumes instead of
restarting.

Where lifecycle hooks fire:

- on the worker, with the plugins installed on its node: every hook of a run, from ``metabench_run_started`` to
  ``metabench_run_finished`` (they come from :func:`metabench.runner.run`), so that a tracker opens and closes its
  run (a TensorBoard writer, an MLflow run) in the process that runs it;
- on the driver: ``metabench_leaderboard_written``.

Faults: a worker process that dies mid-run is retried by Ray (``max_retries``); its run is recorded once, when a
record reaches the driver. A run that raises is a ``failed`` record, as in the sequential executor. A run whose worker
died more than ``max_retries`` times gets no record: the grid goes on, and a rerun resumes it from its checkpoint.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from tqdm.auto import tqdm

from metabench import runner
from metabench.errors import ConfigError, MetabenchError
from metabench.executor import finish, recorded
from metabench.registry import Registry, default_registry
from metabench.runner import RunOptions
from metabench.runspec import RunSpec

EXTRA = "pip install 'metabench[ray]'"
_COMPONENT_KINDS = ("dataset", "sampler", "backbone", "learner", "strategy")


@dataclass(frozen=True)
class RayOptions:
    """Where and with what resources each run goes."""

    address: str | None = None  # None: start Ray on this machine, bound to 127.0.0.1
    cpus_per_run: float = 1.0
    gpus_per_run: float | None = None  # None: 1 when the cluster has GPUs and the device is not cpu, else 0
    max_parallel: int | None = None  # None: as many as the cluster's resources allow
    max_retries: int = 3  # retries of a run whose worker process died


def _on_loopback(address: str | None) -> bool:
    """``address`` (``host:port``; ``None``: a local Ray) is on this machine's loopback interface."""
    return address is None or address.rsplit(":", 1)[0].strip("[]") in ("127.0.0.1", "localhost", "::1")


def _check_reachable(address: str) -> None:
    """Fail fast on a ``host:port`` where nothing listens: ``ray.init`` would retry it for minutes."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return  # "auto", a Ray Client URL: Ray resolves those itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as error:
        raise MetabenchError(
            f"--address {address}: no Ray cluster answers there ({error}); start one with "
            "`ray start --head --node-ip-address IP --port PORT` and pass IP:PORT"
        ) from error


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as error:
        raise MetabenchError(f"--executor ray: Ray is not installed ({error}); install the extra: {EXTRA}") from error
    return ray


def _missing_components(spec: RunSpec, registry: Registry) -> list[str]:
    return [
        f"{kind} '{ref.name}'"
        for kind in _COMPONENT_KINDS
        if (ref := getattr(spec, kind)).name not in registry.names(kind)
    ]


def _run_on_worker(spec: RunSpec, options: RunOptions) -> dict[str, Any]:
    """The body of a Ray task: the run's record, built with the plugins installed on this worker's node."""
    registry = default_registry()
    record = runner.run(spec, registry, options)  # sets torch's threads from options.threads on a CPU run
    if record["status"] == "failed" and (missing := _missing_components(spec, registry)):
        broken = "; ".join(f"{b.plugin} ({b.error})" for b in registry.broken)
        record["error"] = (
            f"Ray worker on {socket.gethostname()} cannot import {', '.join(missing)}: install the plugin that "
            f"provides it on every node{f' (plugins that failed to load there: {broken})' if broken else ''}. "
            f"{record['error']}"
        )
    return record


class RayExecutor:
    """Runs each spec as one Ray task with its resource request; the overall bar advances as runs finish."""

    def __init__(self, ray_options: RayOptions | None = None):
        self.ray_options = ray_options or RayOptions()
        if _on_loopback(self.ray_options.address):
            # Ray swaps 127.0.0.1 for the machine's outward address (and listens there) unless this variable says it
            # is no cluster; it is read when ray is imported (ray/_private/ray_constants.py, ENABLE_RAY_CLUSTER).
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        self.ray = _import_ray()  # fail before any run when the extra is missing

    def run(self, specs: Sequence[RunSpec], options: RunOptions) -> list[dict[str, Any]]:
        if specs:
            started_here = self.connect()
            try:
                self._run_all(specs, options)
            finally:
                if started_here:
                    self.ray.shutdown()
        return recorded(specs, options)

    def connect(self) -> bool:
        """Join ``address`` or start Ray on this machine (loopback only); ``True`` when this call started it."""
        ray, address = self.ray, self.ray_options.address
        if address:
            _check_reachable(address)
        if ray.is_initialized():
            return False
        try:
            if address:
                ray.init(address=address, log_to_driver=True)
            else:
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a loopback-only instance reports nowhere
                ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as error:
            where = f"--address {address}" if address else "local Ray on 127.0.0.1"
            raise MetabenchError(f"{where}: cannot start or join a Ray cluster: {error}") from error
        bound = ray.get_runtime_context().gcs_address
        if _on_loopback(address) and not _on_loopback(bound):
            ray.shutdown()
            raise MetabenchError(
                f"local Ray bound to {bound}, not 127.0.0.1: ray was imported before metabench could keep it on "
                "loopback; set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before importing ray"
            )
        return True

    def _shipped(self, options: RunOptions, gpus: float) -> RunOptions:
        """The options a worker gets: absolute paths (its working folder may differ), no per-run bars, its device."""
        device = options.device
        if gpus == 0 and device == "auto":
            device = "cpu"
        elif gpus == 0 and device != "cpu":
            raise ConfigError(f"--device {device} with --executor ray needs a GPU per run: set --gpus-per-run > 0")
        return replace(
            options,
            out=options.out.resolve(),
            checkpoint_dir=options.checkpoints.resolve(),
            device=device,
            progress=False,
        )

    def _gpus_per_run(self, device: str) -> float:
        gpus = self.ray_options.gpus_per_run
        if gpus is not None:
            return gpus
        return 1.0 if device != "cpu" and self.ray.cluster_resources().get("GPU", 0) > 0 else 0.0

    def _run_all(self, specs: Sequence[RunSpec], options: RunOptions) -> None:
        ray, settings = self.ray, self.ray_options
        gpus = self._gpus_per_run(options.device)
        shipped = self._shipped(options, gpus)
        task = ray.remote(_run_on_worker).options(
            num_cpus=settings.cpus_per_run, num_gpus=gpus, max_retries=settings.max_retries, retry_exceptions=False
        )
        queue = list(reversed(specs))
        window = settings.max_parallel or len(specs)
        in_flight: dict[Any, RunSpec] = {}
        with tqdm(total=len(specs), desc="runs", unit="run", disable=not options.progress) as bar:
            try:
                while queue or in_flight:
                    while queue and len(in_flight) < window:
                        spec = queue.pop()
                        in_flight[task.remote(spec, shipped)] = spec
                    bar.set_postfix_str(f"{len(in_flight)} in flight")
                    ready, _ = ray.wait(list(in_flight), num_returns=1)
                    self._collect(ready, in_flight, options, bar)
                    bar.set_postfix_str(f"{len(in_flight)} in flight")
            except KeyboardInterrupt:
                # keep what finished meanwhile, then stop the rest: their checkpoints stay for the rerun
                if in_flight:
                    ready, _ = ray.wait(list(in_flight), num_returns=len(in_flight), timeout=0)
                    self._collect(ready, in_flight, options, bar)
                for ref in in_flight:
                    ray.cancel(ref, force=True)
                raise

    def _collect(self, ready: list[Any], in_flight: dict[Any, RunSpec], options: RunOptions, bar: tqdm) -> None:
        for ref in ready:
            spec = in_flight.pop(ref)
            try:
                record = self.ray.get(ref)
            except self.ray.exceptions.RayError as error:
                summary = (str(error).strip().splitlines() or [type(error).__name__])[0]
                bar.write(f"{spec.label}: no record ({type(error).__name__}: {summary}); rerun to resume it")
            else:
                finish(options, spec, record)
                if record["status"] == "failed":
                    bar.write(f"{spec.label} failed: {record['error']}")
            bar.update()
