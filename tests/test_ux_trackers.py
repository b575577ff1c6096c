"""``metabench run --report tensorboard,mlflow``: read back with each tracker's own reader from a real local store;
a tracker that is missing is a named error, one that is down or raises never fails a run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import benchmark_files
import pytest
from benchmark_files import write_benchmark
from test_ux import SET

from metabench import results

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
mlflow_tracking = pytest.importorskip("mlflow.tracking")

ONE_CELL = ["--set", "grid.learners=['maml']", "--set", "grid.strategies=['metamix']"]


def run(tmp_path, *extra: str) -> int:
    bench = write_benchmark(tmp_path / "tiny.toml", "sine")
    return benchmark_files.run(bench, "--out", tmp_path / "results", *SET, *extra)


def test_tensorboard_and_mlflow_receive_steps_evaluations_and_the_record(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert run(tmp_path, *ONE_CELL, "--report", "tensorboard,mlflow") == 0
    out = tmp_path / "results"
    [record] = results.load_records(out)
    assert record["status"] == "ok" and "--report" not in capsys.readouterr().err  # no tracker warning
    curves = {point["step"]: point for point in record["curves"]}
    test = record["metrics"]["test"]

    [run_dir] = (out / "tensorboard").iterdir()
    assert run_dir.name == f"tiny-sine-standard-maml-metamix-seed=0-{record['config_hash'][:8]}"
    events = event_accumulator.EventAccumulator(str(run_dir), size_guidance={event_accumulator.SCALARS: 0})
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]
    val = {e.step: e.value for e in events.Scalars("val/mean")}
    assert val == pytest.approx({step: point["val_post"] for step, point in curves.items()}, rel=1e-6)
    [final] = events.Scalars("test/mean")
    assert final.step == 3 and final.value == pytest.approx(test["mean"], rel=1e-6)
    assert events.Scalars("test/ci95")[0].value == pytest.approx(test["ci95"], rel=1e-6)

    client = mlflow_tracking.MlflowClient(tracking_uri=f"sqlite:///{out / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny-sine")
    [tracked] = client.search_runs([experiment.experiment_id])
    assert tracked.info.status == "FINISHED" and tracked.info.run_name == "standard/maml/metamix/seed=0"
    assert tracked.data.params["training.meta_steps"] == "3" and tracked.data.params["learner.name"] == "maml"
    assert tracked.data.tags["metabench.config_hash"] == record["config_hash"]
    history = client.get_metric_history(tracked.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == [1, 2, 3]
    assert tracked.data.metrics["test/mean"] == pytest.approx(test["mean"])
    val_history = {m.step: m.value for m in client.get_metric_history(tracked.info.run_id, "val/mean")}
    assert val_history == pytest.approx({step: point["val_post"] for step, point in curves.items()})
    artifact = client.download_artifacts(tracked.info.run_id, "record.json", str(tmp_path))
    assert json.loads(Path(artifact).read_text()) == record


def test_a_tracker_that_raises_or_is_down_never_fails_a_run(tmp_path, monkeypatch, capsys):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "tensorboard").write_text("a file where the event folders would go")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    assert run(tmp_path, *ONE_CELL, "--report", "tensorboard,mlflow") == 0
    [record] = results.load_records(tmp_path / "results")
    assert record["status"] == "ok"
    error = capsys.readouterr().err
    # one warning per tracker and run, not one per step
    assert error.count("warning: --report tensorboard: ") == 1 and error.count("warning: --report mlflow: ") == 1
    assert "not reporting run standard/maml/metamix/seed=0 any further" in error


@pytest.mark.parametrize("name", ["tensorboard", "mlflow"])
def test_a_missing_tracker_package_names_its_extra(tmp_path, monkeypatch, capsys, name):
    monkeypatch.setitem(sys.modules, name, None)  # as if not installed: import and find_spec both fail
    assert run(tmp_path, "--report", f"{name}") == 2
    error = capsys.readouterr().err
    assert f"pip install 'metabench[{name}]'" in error and "Traceback" not in error
    assert not (tmp_path / "results").exists()
    assert run(tmp_path, "--report", "wandb") == 2
    assert "unknown reporter 'wandb'; allowed: tensorboard, mlflow" in capsys.readouterr().err


def test_a_resumed_run_continues_its_mlflow_run(tmp_path, monkeypatch):
    from test_runner import Recorder, registry_with, spec

    from metabench.executor import SequentialExecutor
    from metabench.plugins.reporters.mlflow import MlflowRun
    from metabench.plugins.reporters.tracking import Tracker
    from metabench.runner import RunOptions

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    options = RunOptions(out=tmp_path, device="cpu", progress=False, report=("mlflow",))
    run = spec(steps=12)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C at step 7; the checkpoint of step 5 stays
        SequentialExecutor(registry_with(Recorder(interrupt_at=7), Tracker("mlflow", MlflowRun))).run([run], options)
    SequentialExecutor(registry_with(Tracker("mlflow", MlflowRun))).run([run], options)
    [record] = results.load_records(tmp_path)
    assert record["resumed_from"] == 5
    client = mlflow_tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    [tracked] = client.search_runs([client.get_experiment_by_name("fake").experiment_id])
    assert tracked.info.status == "FINISHED" and tracked.data.tags["metabench.config_hash"] == record["config_hash"]
    steps = {m.step for m in client.get_metric_history(tracked.info.run_id, "train/loss")}
    assert {1, 2, 3, 4} <= steps and {6, 7, 8, 9, 10, 11, 12} <= steps  # before the interruption, and after it
