"""The dry run's time estimate: each cell's meta-steps timed on the device it names, or read from a record of the
same config on that device type; baselines without meta-training cost no training time."""

from __future__ import annotations

import re

from benchmark_files import run, write_benchmark


def _estimate_lines(text: str) -> dict[str, str]:
    lines = text.split("estimated meta-training time on cpu", 1)[1].splitlines()[1:]
    return {line.split(":", 1)[0].strip(): line for line in lines}


def test_the_dry_run_estimates_training_time_from_timed_steps_then_from_records(tmp_path, capsys):
    grid = {"grid.learners": ["maml", "scratch"], "grid.strategies": ["query"], "training.meta_steps": 600}
    path = write_benchmark(tmp_path / "b.toml", "sine", grid)
    out = tmp_path / "out"
    assert run(path, "--out", out, "--dry-run") == 0
    lines = _estimate_lines(capsys.readouterr().out)
    speed = float(re.search(r"1 x 600 steps, ([\d.e+]+) steps/s \(timed here\)", lines["standard/maml/query"])[1])
    minutes = float(re.search(r": ([\d.]+) min$", lines["standard/maml/query"])[1])
    assert abs(minutes - 600 / speed / 60) <= 0.05 + 0.01 * minutes
    assert "no meta-training: 0.0 min" in lines["standard/scratch/query"]
    assert not out.exists()

    assert run(path, "--out", out, "--set", "training.meta_steps=4") == 0
    capsys.readouterr()
    assert run(path, "--out", out, "--set", "training.meta_steps=4", "--set", "grid.seeds=[0, 1]", "--dry-run") == 0
    lines = _estimate_lines(capsys.readouterr().out)
    assert re.search(r"1 x 4 steps, [\d.e+]+ steps/s \(record [0-9a-f]{16}\)", lines["standard/maml/query"])


def test_the_dry_run_names_the_generative_models_the_runs_will_train_first(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("METABENCH_CACHE", str(tmp_path / "cache"))
    vae = {"name": "lasium-ro", "params": {"model": "vae", "model_params": {"width": 4, "epochs": 1}}}
    path = write_benchmark(tmp_path / "b.toml", "omniglot", {"grid.samplers": [vae]})
    untrained = "not counted: trained once before the first meta-step of the runs that need it (not cached):"
    seed = "generative model 'vae epochs=1 width=4' (seed {})"

    assert run(path, "--out", tmp_path / "out", "--dry-run", "--set", "grid.seeds=[0, 1]") == 0
    shown = capsys.readouterr().out
    assert f"{untrained}\n    {seed.format(0)}\n    {seed.format(1)}\n" in shown
    assert not (tmp_path / "cache" / "generative-models").exists()  # the dry run trained nothing

    assert run(path, "--out", tmp_path / "out") == 0  # seed 0 trains its VAE and caches it
    capsys.readouterr()
    assert run(path, "--out", tmp_path / "out", "--dry-run", "--set", "grid.seeds=[0, 1]") == 0
    shown = capsys.readouterr().out
    assert f"{untrained}\n    {seed.format(1)}: about " in shown and seed.format(0) not in shown
    assert "s (the median of 1 other seed, by the cache)\n" in shown  # seed 0's training time
