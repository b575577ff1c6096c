"""Benchmark files: grid expansion, profiles, the config hash, and validation errors that name file and key."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import pytest
from benchmark_files import FAKE_GRID

from metabench.cli import main
from metabench.config import load_benchmark, select
from metabench.errors import ConfigError
from metabench.registry import Registry
from metabench.runspec import RunSpec


def write(tmp_path: Path, text: str, name: str = "bench.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(tmp_path: Path, fake_registry: Registry, text: str, profile: str | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_benchmark(write(tmp_path, text), fake_registry, profile=profile)
    return str(info.value)


def test_grid_expands_every_combination_with_shared_and_per_entry_params(tmp_path, fake_registry):
    specs = load_benchmark(write(tmp_path, FAKE_GRID), fake_registry)
    assert len(specs) == 1 * 2 * 2 * 3
    assert [s.seed for s in specs] == [0] * 4 + [1] * 4 + [2] * 4  # every cell of a seed before the next seed
    plain = next(s for s in specs if s.learner.label == "fake-learner")
    fails = next(s for s in specs if s.learner.label == "fails")
    # [params.learner.fake-learner] applies to both entries; the entry's own params add to it; defaults are filled in
    assert plain.learner.params == {"fail_at": 0, "nan_at": 7, "refuse": "", "meta_trains": True, "nan_eval": False}
    assert fails.learner.params["fail_at"] == 3 and fails.learner.params["nan_at"] == 7
    assert plain.protocol.n_way == 3 and plain.protocol.k_shot == 1 and plain.training.meta_steps == 20
    assert plain.backbone.params == {"hidden": 8}


def test_profile_overrides_only_what_it_names(tmp_path, fake_registry):
    specs = load_benchmark(write(tmp_path, FAKE_GRID), fake_registry, profile="quick")
    assert len(specs) == 4 and {s.seed for s in specs} == {0}
    assert specs[0].training.meta_steps == 5 and specs[0].training.meta_lr == 0.01
    assert specs[0].profile == "quick"


def test_config_hash_follows_the_resolved_config(tmp_path, fake_registry):
    base = load_benchmark(write(tmp_path, FAKE_GRID), fake_registry)
    again = load_benchmark(write(tmp_path, FAKE_GRID), fake_registry)
    changed = load_benchmark(write(tmp_path, FAKE_GRID.replace("meta_lr = 0.01", "meta_lr = 0.02")), fake_registry)
    assert [s.config_hash for s in base] == [s.config_hash for s in again]
    assert len({s.config_hash for s in base}) == len(base)
    assert not {s.config_hash for s in base} & {s.config_hash for s in changed}
    spec = base[0]
    assert pickle.loads(pickle.dumps(spec)) == spec and hash(spec) == hash(RunSpec.from_dict(spec.to_dict()))
    assert RunSpec.from_dict(spec.to_dict()) == spec


def test_select_matches_labels(tmp_path, fake_registry):
    specs = load_benchmark(write(tmp_path, FAKE_GRID), fake_registry)
    assert len(select(specs, "fails")) == 6
    assert len(select(specs, "*/fake-learner/query/seed=[01]")) == 2
    assert select(specs, None) == specs


def test_unknown_component_names_file_key_and_close_match(tmp_path, fake_registry):
    message = error_of(tmp_path, fake_registry, FAKE_GRID.replace('strategies = ["query"', 'strategies = ["qeury"'))
    assert "bench.toml: grid.strategies[0]" in message
    assert "unknown strategy 'qeury'" in message and "did you mean 'query'" in message and "support" in message


def test_unknown_parameter_names_file_and_table(tmp_path, fake_registry):
    message = error_of(tmp_path, fake_registry, FAKE_GRID.replace("nan_at = 7", "nan_a = 7"))
    assert "bench.toml: params.learner.fake-learner" in message
    assert "no parameter 'nan_a'" in message and "did you mean 'nan_at'" in message


def test_wrong_type_and_out_of_range(tmp_path, fake_registry):
    message = error_of(tmp_path, fake_registry, FAKE_GRID.replace("n_way = 3", 'n_way = "three"'))
    assert "bench.toml: protocol.n_way" in message and "expected int, got str" in message
    message = error_of(tmp_path, fake_registry, FAKE_GRID.replace("fail_at = 3", "fail_at = -1"))
    assert "bench.toml: grid.learners[1].params" in message and "'fail_at' = -1" in message and ">= 0" in message
    message = error_of(tmp_path, fake_registry, FAKE_GRID.replace("seeds = [0, 1, 2]", "seeds = [0, -1]"))
    assert "grid.seeds" in message


def test_errors_in_a_profile_point_into_the_profile(tmp_path, fake_registry):
    message = error_of(
        tmp_path, fake_registry, FAKE_GRID.replace("meta_steps = 5", "meta_steps = 2.5"), profile="quick"
    )
    assert "bench.toml: profiles.quick.training.meta_steps" in message and "expected int, got float" in message
    message = error_of(tmp_path, fake_registry, FAKE_GRID, profile="quik")
    assert "no profile 'quik'" in message and "did you mean 'quick'" in message


def test_unknown_keys_are_errors(tmp_path, fake_registry):
    message = error_of(tmp_path, fake_registry, FAKE_GRID.replace("[training]", "[trainig]"))
    assert "bench.toml: trainig" in message and "did you mean 'training'" in message
    message = error_of(tmp_path, fake_registry, FAKE_GRID.replace("meta_lr = 0.01", "meta_lr = 0.01\nmeta_bach = 2"))
    assert "training.meta_bach" in message and "did you mean 'meta_batch'" in message


def test_cli_rejects_a_bad_file_before_running_anything(tmp_path, capsys):
    path = write(tmp_path, FAKE_GRID.replace('learners = ["fake-learner"', 'learners = ["no-such-learner"'))
    out = tmp_path / "results"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "bench.toml: " in error and "unknown learner" in error
    assert not out.exists()


def test_unknown_key_in_a_profile_points_into_the_profile(tmp_path, fake_registry):
    message = error_of(tmp_path, fake_registry, FAKE_GRID.replace("meta_steps = 5", "meta_step = 5"), profile="quick")
    assert "bench.toml: profiles.quick.training.meta_step: unknown key" in message
    message = error_of(tmp_path, fake_registry, FAKE_GRID + "\n[profiles.quick.protocl]\nn_way = 2\n", profile="quick")
    assert "bench.toml: profiles.quick.protocl: unknown key" in message and "did you mean 'protocol'" in message


def test_a_learner_that_reads_no_training_task_runs_once_whatever_the_sampler(tmp_path):
    from metabench.registry import default_registry

    path = write(
        tmp_path,
        """
        [dataset]
        name = "sinusoid"
        [backbone]
        name = "mlp"
        [grid]
        samplers = ["standard", "nme"]
        learners = ["maml", "scratch"]
        strategies = ["query"]
        seeds = [0, 1]
        """,
    )
    labels = [s.label for s in load_benchmark(path, default_registry())]
    assert sorted(labels) == sorted(
        f"{sampler}/{learner}/query/seed={seed}"
        for seed in (0, 1)
        for sampler, learner in (("standard", "maml"), ("nme", "maml"), ("standard", "scratch"))
    )
