"""The Ray executor on a real local Ray instance (CPU only, 2 workers, 127.0.0.1, no dashboard), through the CLI."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from benchmark_files import write_benchmark
from plugin_packages import installed, write_plugin_package

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
    log = root / "events.jsonl"
    with (
        installed(root, write_plugin_package(root, "mb-faulty", "mb_faulty", FAULTY_PLUGIN)),
        pytest.MonkeyPatch.context() as patch,
    ):
        default_registry.cache_clear()
        # the workers inherit the environment: the plugin's folder on PYTHONPATH, and these
        patch.setenv("METABENCH_LOG", str(log))
        patch.setenv("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=2, num_gpus=0, _node_ip_address="127.0.0.1", include_dashboard=False)
        assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
        try:
            yield log
        finally:
            ray.shutdown()
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


def test_ctrl_c_keeps_finished_records_and_the_rerun_resumes(local_ray: Path, tmp_path: Path, capsys) -> None:
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
    capsys.readouterr()
    assert main(command[3:]) == 0
    # the worker resumed it; the driver says so itself, as the sequential executor does (a line of its own, not one
    # of the worker's that this module's Ray forwards with a "(pid=...)" prefix)
    said = "standard/hangs/query/seed=0: resuming at step 2 (from its checkpoint)"
    assert said in capsys.readouterr().out.splitlines()
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


def test_trackers_open_and_close_each_run_on_its_worker(local_ray: Path, tmp_path: Path, monkeypatch) -> None:
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    mlflow_tracking = pytest.importorskip("mlflow.tracking")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "out"
    grid = str(_grid(tmp_path, ["maml", "fomaml"]))
    command = ["run", grid, "--out", str(out), "--executor", "ray", "--max-parallel", "1", "--no-progress"]
    assert main([*command, "--report", "tensorboard,mlflow"]) == 0
    records = _records(out)
    assert len(records) == 2
    client = mlflow_tracking.MlflowClient(tracking_uri=f"sqlite:///{out / 'mlruns' / 'mlflow.db'}")
    tracked = client.search_runs([client.get_experiment_by_name("tiny-sine").experiment_id])
    assert sorted(t.data.tags["metabench.config_hash"] for t in tracked) == sorted(records)
    assert [t.info.status for t in tracked] == ["FINISHED"] * 2  # ended by the worker that ran it
    assert all(t.data.tags["metabench.status"] == "ok" for t in tracked)
    for run_dir in (out / "tensorboard").iterdir():  # the writer was closed: its last words were flushed
        events = event_accumulator.EventAccumulator(str(run_dir))
        events.Reload()
        assert "status/text_summary" in events.Tags()["tensors"], run_dir


def test_the_bar_counts_the_steps_of_the_runs_in_flight(local_ray: Path, tmp_path: Path, capsys) -> None:
    grid = str(_grid(tmp_path, ["fomaml"], ("query", "metamix")))  # 2 runs of 6 steps
    assert main(["run", grid, "--out", str(tmp_path), "--device", "cpu", "--executor", "ray"]) == 0
    bar = capsys.readouterr().err
    assert "steps: 100%" in bar and "12/12" in bar and "2/2 runs, 0 in flight" in bar


def _driver(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "metabench.cli", "run", *args, "--device", "cpu", "--no-progress"]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)


def test_resources_no_node_has_are_an_error_before_anything_runs(local_ray: Path, tmp_path: Path, capsys) -> None:
    grid, out = str(_grid(tmp_path, ["fomaml"])), tmp_path / "out"
    address = ["--executor", "ray", "--address", ray.get_runtime_context().gcs_address, "--out", str(out)]
    gpu = _driver(grid, *address, "--gpus-per-run", "0.5", env=dict(os.environ), timeout=90)
    assert gpu.returncode == 2, gpu.stderr
    assert "--gpus-per-run 0.5: no node of the Ray cluster has the GPUs for one run (127.0.0.1: 2 CPU, 0 GPU)" in (
        gpu.stderr
    )
    # in this process, on the module's Ray: no second driver to start
    assert main(["run", grid, "--out", str(out), "--executor", "ray", "--cpus-per-run", "3", "--no-progress"]) == 2
    assert "--cpus-per-run 3: no node of the Ray cluster has the CPUs" in capsys.readouterr().err
    assert not (out / "runs").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def loopback_head() -> Iterator[tuple[str, dict[str, str]]]:
    """A ``ray start --head`` on 127.0.0.1 with 1 CPU and token authentication on (Ray's default once
    ``~/.ray/auth_token`` exists), in its own temp dir and home; yields its address and the drivers' environment
    (that home and temp dir: Ray's address file names the head). Stopped by its process group at the end."""
    root = Path(tempfile.mkdtemp(prefix="mbh", dir="/tmp"))  # short: Ray's socket paths are limited to 107 bytes
    (root / "home" / ".ray").mkdir(parents=True)
    (root / "home" / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env.update(HOME=str(root / "home"), TMPDIR=str(root), RAY_USAGE_STATS_ENABLED="0")
    port = _free_port()
    command = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--num-cpus", "1"]
    command += ["--node-ip-address", "127.0.0.1", "--port", str(port), "--include-dashboard", "false"]
    for flag in ("--ray-client-server-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port"):
        command += [flag, str(_free_port())]
    head = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        address_file = root / "ray" / "ray_current_cluster"
        deadline = time.monotonic() + 60
        while not address_file.exists() and time.monotonic() < deadline and head.poll() is None:
            time.sleep(0.2)
        assert address_file.read_text().strip() == f"127.0.0.1:{port}"
        yield f"127.0.0.1:{port}", env
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # what SIGTERM left (the GCS server ignores it)
            os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="tells its own instance from the 1-CPU head by a 2-CPU run")
def test_local_ray_starts_its_own_instance_and_keeps_its_output_in_a_log(loopback_head, tmp_path: Path) -> None:
    _, env = loopback_head  # the head is in Ray's address file: a local Ray must not join it
    out = tmp_path / "out"
    done = _driver(
        str(_grid(tmp_path, ["fomaml"])),
        "--executor",
        "ray",
        "--cpus-per-run",
        "2",
        "--threads",
        "2",
        "--out",
        str(out),
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and done.stdout.splitlines()[0] == "1 run: 1 to run", done.stdout
    assert len(done.stdout.splitlines()) == 2 and (out / "ray.log").is_file()  # what Ray says goes there


def test_address_joins_a_head_with_token_authentication(loopback_head, tmp_path: Path) -> None:
    address, env = loopback_head
    out = tmp_path / "out"
    done = _driver(
        str(_grid(tmp_path, ["fomaml"])), "--executor", "ray", "--address", address, "--out", str(out), env=env
    )
    assert done.returncode == 0, done.stderr
    assert "InvalidAuthToken" not in done.stderr
    assert [r["status"] for r in results.load_records(out)] == ["ok"]


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
