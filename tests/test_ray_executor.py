"""The Ray executor on a real local Ray instance (CPU only, 2 workers, 127.0.0.1, no dashboard), through the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from benchmark_files import write_benchmark
from plugin_packages import pip, write_plugin_package

from metabench import config, results
from metabench.cli import main
from metabench.ray_executor import RayExecutor
from metabench.registry import default_registry
from metabench.runner import RunOptions
from metabench.runspec import ComponentRef

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before importing ray: keep 127.0.0.1 (see ray_executor.py)
ray = pytest.importorskip("ray")

FAULTY_PLUGIN = """
    import os
    import signal
    import time
    from pathlib import Path

    import torch
    from torch.func import functional_call

    from metabench import Param, hookimpl, parameters


    @parameters(
        Param("fault", str, "none", "what happens at the third meta-step", choices=("none", "kill", "raise", "hang")),
        Param("marker", str, "", "kill, hang: only while this file does not exist (it is created first)"),
    )
    class Faulty:
        '''Regression without an inner loop; ``kill`` SIGKILLs its own process, ``hang`` sleeps (first attempt).'''

        meta_trains = True

        def __init__(self, fault, marker):
            self.fault, self.marker, self.calls = fault, marker, 0

        def init_params(self, backbone, generator):
            self.backbone = backbone
            return {n: p.detach().clone().requires_grad_() for n, p in backbone.named_parameters()}

        def incompatible(self, strategy, strategy_name, task_type):
            return None

        def _errors(self, params, x, y):
            prediction = functional_call(self.backbone, params, (x.flatten(0, 1),)).view(y.shape)
            return ((prediction - y) ** 2).flatten(1).mean(1)

        def meta_loss(self, params, tasks, strategy, rng):
            self.calls += 1
            if self.calls == 3 and self.fault == "raise":
                raise RuntimeError("faulty learner raised at its third step")
            if self.calls == 3 and self.fault == "kill" and not os.path.exists(self.marker):
                Path(self.marker).touch()
                os.kill(os.getpid(), signal.SIGKILL)
            if self.calls == 3 and self.fault == "hang" and not os.path.exists(self.marker):
                Path(self.marker).touch()
                time.sleep(600)
            return self._errors(params, tasks.query_x, tasks.query_y).mean(), {}

        def evaluate(self, params, tasks):
            with torch.no_grad():
                query = self._errors(params, tasks.query_x, tasks.query_y)
                support = self._errors(params, tasks.support_x, tasks.support_y)
            return {"pre": query, "post": query, "train_pre": support, "train_post": support}

        def diagnostics(self, params, tasks):
            return {}


    @hookimpl
    def metabench_register_learners(register):
        register("faulty", Faulty, summary="no inner loop; can kill its worker or raise (tests)")
"""


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The faulty-learner plugin installed, then one local Ray (2 CPUs, loopback) for the module; yields the event
    log that the ``jsonl`` reporter writes on the driver and on the workers."""
    root = tmp_path_factory.mktemp("ray")
    pip(
        "install",
        "--no-build-isolation",
        "--no-deps",
        str(write_plugin_package(root, "mb-faulty", "mb_faulty", FAULTY_PLUGIN)),
    )
    default_registry.cache_clear()
    log = root / "events.jsonl"
    saved = {key: os.environ.get(key) for key in ("METABENCH_LOG", "RAY_USAGE_STATS_ENABLED")}
    os.environ.update(METABENCH_LOG=str(log), RAY_USAGE_STATS_ENABLED="0")  # workers inherit the environment
    ray.init(num_cpus=2, num_gpus=0, _node_ip_address="127.0.0.1", include_dashboard=False)
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    try:
        yield log
    finally:
        ray.shutdown()
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.update({key: value})
        pip("uninstall", "-y", "mb-faulty")
        default_registry.cache_clear()


def _grid(tmp_path: Path, learners: list[object], strategies: tuple[str, ...] = ("query",)) -> Path:
    overrides = {"training.meta_steps": 6, "grid.learners": learners, "grid.strategies": list(strategies)}
    return write_benchmark(tmp_path / "grid.toml", "sine", overrides)


def _records(out: Path) -> dict[str, dict]:
    return {r["config_hash"]: r for r in results.load_records(out)}


def test_ray_gives_the_sequential_executors_records(local_ray: Path, tmp_path: Path) -> None:
    grid = _grid(tmp_path, ["maml", "fomaml"], ("query", "metamix"))
    common = ["run", str(grid), "--device", "cpu", "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "seq")]) == 0
    assert main([*common, "--out", str(tmp_path / "ray"), "--executor", "ray", "--max-parallel", "2"]) == 0
    sequential, distributed = _records(tmp_path / "seq"), _records(tmp_path / "ray")
    assert len(sequential) == 4 and sequential.keys() == distributed.keys()
    for key, record in sequential.items():
        assert distributed[key]["status"] == record["status"] == "ok"
        assert distributed[key]["metrics"] == record["metrics"]
        assert distributed[key]["curves"] == record["curves"]
        assert distributed[key]["environment"]["device"] == "cpu"
    assert (tmp_path / "ray" / "LEADERBOARD.md").exists()


def test_killed_worker_is_retried_and_recorded_once_and_a_failing_run_does_not_stop_the_rest(
    local_ray: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "killed-once"
    killed = {"name": "faulty", "label": "killed", "params": {"fault": "kill", "marker": str(marker)}}
    learners = [killed, {"name": "faulty", "label": "raises", "params": {"fault": "raise"}}, "faulty"]
    out = tmp_path / "out"
    checkpoints = tmp_path / "elsewhere"
    grid = str(_grid(tmp_path, learners))
    code = main(
        ["run", grid, "--out", str(out), "--checkpoint-dir", str(checkpoints), "--executor", "ray", "--no-progress"]
    )
    assert code == 1  # one failed run
    assert marker.exists()  # the worker was killed once
    records = {r["label"].split("/")[1]: r for r in results.load_records(out)}
    assert records.keys() == {"killed", "raises", "faulty"}
    assert records["killed"]["status"] == "ok" and records["killed"]["steps"] == 6
    assert records["killed"]["resumed_from"] == 2  # the retry resumed from the checkpoint before the kill
    assert records["raises"]["status"] == "failed"
    assert "faulty learner raised at its third step" in records["raises"]["error"]
    assert records["faulty"]["status"] == "ok"
    events = [json.loads(line) for line in local_ray.read_text().splitlines()]
    finished = Counter(e["run"] for e in events if e["event"] == "run_finished")
    assert all(finished[r["config_hash"]] == 1 for r in records.values())  # run_finished once per run
    # checkpoints went to --checkpoint-dir (the retry resumed from there) and were removed once recorded
    assert checkpoints.is_dir() and not list(checkpoints.iterdir()) and not (out / "checkpoints").exists()


def test_ctrl_c_keeps_finished_records_and_the_rerun_resumes(local_ray: Path, tmp_path: Path) -> None:
    marker = tmp_path / "hung-once"
    hang = {"name": "faulty", "label": "hangs", "params": {"fault": "hang", "marker": str(marker)}}
    learners = ["faulty", hang, "fomaml"]
    out = tmp_path / "out"
    # a second driver joins this module's Ray, as on a cluster; one run at a time: the hanging one is in flight
    address = ray.get_runtime_context().gcs_address
    command = [sys.executable, "-m", "metabench.cli", "run", str(_grid(tmp_path, learners)), "--out", str(out)]
    command += ["--executor", "ray", "--address", address, "--max-parallel", "1", "--no-progress"]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not (marker.exists() and list((out / "checkpoints").glob("*.pt"))) and time.monotonic() < deadline:
        assert driver.poll() is None, driver.communicate()[0]
        time.sleep(0.2)
    driver.send_signal(signal.SIGINT)
    output = driver.communicate(timeout=60)[0]
    assert driver.returncode == 130, output
    assert "rerun the same command to resume" in output
    assert [r["label"].split("/")[1] for r in results.load_records(out)] == ["faulty"]
    deadline = time.monotonic() + 30  # the hanging task was cancelled: both CPUs come back
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == 2
    assert main(command[3:]) == 0
    records = {r["label"].split("/")[1]: r for r in results.load_records(out)}
    assert records.keys() == {"faulty", "hangs", "fomaml"}
    assert records["hangs"]["status"] == "ok" and records["hangs"]["resumed_from"] == 2


def test_a_component_missing_on_the_worker_fails_its_run_saying_so(local_ray: Path, tmp_path: Path) -> None:
    (spec,) = config.load_benchmark(_grid(tmp_path, ["fomaml"]), default_registry())
    missing = dataclasses.replace(spec, learner=ComponentRef.of("only-on-the-driver"))
    options = RunOptions(out=tmp_path / "out", device="cpu", progress=False)
    (record,) = RayExecutor().run([missing], options)
    assert record["status"] == "failed"
    assert "cannot import learner 'only-on-the-driver'" in record["error"]
    assert "install the plugin that provides it on every node" in record["error"]


def test_executor_ray_without_ray_names_the_extra(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as when it is not installed
    assert main(["run", str(_grid(tmp_path, ["fomaml"])), "--out", str(tmp_path), "--executor", "ray"]) == 2
    assert "pip install 'metabench[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_ray_flags_need_the_ray_executor(tmp_path: Path, capsys) -> None:
    assert main(["run", str(_grid(tmp_path, ["fomaml"])), "--out", str(tmp_path), "--max-parallel", "2"]) == 2
    assert "--max-parallel: only with --executor ray" in capsys.readouterr().err


def test_an_address_where_no_ray_listens_is_an_error_not_a_wait(tmp_path: Path, capsys) -> None:
    grid = str(_grid(tmp_path, ["fomaml"]))
    assert main(["run", grid, "--out", str(tmp_path), "--executor", "ray", "--address", "127.0.0.1:1"]) == 2
    assert "--address 127.0.0.1:1: no Ray cluster answers there" in capsys.readouterr().err


def test_until_decided_on_ray_gives_the_sequential_rounds_records(local_ray: Path, tmp_path: Path) -> None:
    grid = write_benchmark(
        tmp_path / "grid.toml", "sine", {"training.meta_steps": 4, "grid.learners": ["maml"], "grid.seeds": [0, 1]}
    )
    common = ["run", str(grid), "--device", "cpu", "--no-progress", "--until-decided", "--max-seeds", "4"]
    assert main([*common, "--out", str(tmp_path / "seq")]) == 0
    assert main([*common, "--out", str(tmp_path / "ray"), "--executor", "ray", "--max-parallel", "2"]) == 0
    sequential, distributed = _records(tmp_path / "seq"), _records(tmp_path / "ray")
    assert sequential.keys() == distributed.keys() and len(sequential) in (4, 8)
    for key, record in sequential.items():
        assert distributed[key]["config"]["analysis"] == record["config"]["analysis"]
        assert distributed[key]["metrics"]["test"]["per_task"] == record["metrics"]["test"]["per_task"]
