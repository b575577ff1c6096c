"""The traps a new user fell into (issue #26), each through the CLI: a retry hint that drops flags, a dry run that
promises failing runs, values of the wrong shape, duplicate seeds, stale checkpoint temporaries, records read in
file-time order, ``+dirty`` from the results folder, ``show BENCHMARK:LABEL``, the resume message and the reporters in
``metabench plugins``."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import fake_components
import pytest
from benchmark_files import FAKE_GRID, benchmark_toml, run, write_benchmark

from metabench import cli, config, hookimpl, results
from metabench.cli import build_parser, main
from metabench.registry import Registry, default_registry

# --- the retry command ----------------------------------------------------------------------------------------------


def test_the_retry_command_repeats_the_whole_invocation(tmp_path, fakes, capsys):
    path = tmp_path / "grid.toml"
    path.write_text(FAKE_GRID)
    out = tmp_path / "my results"  # a space: the command must quote it
    argv = ["run", str(path), "--profile", "quick", "--out", str(out), "--only", "*fails*", "--device", "cpu"]
    argv += ["--set", "training.meta_steps=4", "--set", "grid.seeds=[0, 1]", "--threads", "1", "--no-progress"]
    assert main(argv) == 1
    error = capsys.readouterr().err
    (hint,) = [line for line in error.splitlines() if "run them again:" in line]
    command = shlex.split(hint.split("run them again: ", 1)[1])
    assert command[0] == "metabench" and command[-1] == "--retry-failed"
    retried, original = build_parser().parse_args(command[1:]), build_parser().parse_args(argv)
    assert vars(retried) == {**vars(original), "retry_failed": True}
    assert main(command[1:]) == 1  # the same four failed runs (2 seeds x 2 strategies), run again: nothing else
    assert capsys.readouterr().out.startswith("4 runs: 4 failed (to run again (--retry-failed)), 4 to run\n")


# --- the dry run ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, problem",
    [
        ({"grid.strategies": ["metamix"], "params.strategy.metamix.layers": [7]}, "layer(s) [7] do not exist"),
        ({"dataset.name": "image-folder", "dataset.params": {"root": "/nonexistent/images"}}, "/nonexistent/images"),
    ],
)
def test_a_dry_run_runs_preflight(tmp_path, capsys, overrides, problem):
    path = write_benchmark(tmp_path / "b.toml", "sine", {"grid.learners": ["maml"], **overrides})
    assert run(path, "--out", tmp_path / "out", "--dry-run") == 2
    error = capsys.readouterr().err
    assert "preflight found 1 problem" in error and problem in error
    assert not (tmp_path / "out").exists()


# --- values of the wrong shape --------------------------------------------------------------------------------------


def _shape_error(tmp_path: Path, capsys, text: str, *sets: str) -> str:
    path = tmp_path / "b.toml"
    path.write_text(text)
    assert run(path, "--out", tmp_path / "out", "--dry-run", *(a for s in sets for a in ("--set", s))) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and "Traceback" not in error, error
    return error


SINE = benchmark_toml("sine")


@pytest.mark.parametrize(
    "text, where, shape",
    [
        (
            SINE.replace('[dataset]\nname = "sinusoid"', '[dataset]\nname = "sinusoid"\nparams = "abc"'),
            "dataset.params",
            "table",
        ),
        (SINE.replace("params = { widths = [8] }", "params = [8]"), "backbone.params", "table"),
        (SINE + "[params.learner]\nmaml = 3\n", "params.learner.maml", "table"),
        ("profiles = 3\n" + SINE, "profiles", "table"),
        (SINE + "[profiles]\nquick = 3\n", "profiles", "table"),
    ],
)
def test_a_value_of_the_wrong_shape_is_one_line_naming_file_key_and_shape(tmp_path, capsys, text, where, shape):
    error = _shape_error(tmp_path, capsys, text)
    assert error.startswith(f"error: {tmp_path / 'b.toml'}: {where}: expected a {shape}"), error


def test_an_override_of_the_wrong_shape_names_the_set(tmp_path, capsys):
    error = _shape_error(tmp_path, capsys, SINE, "dataset.params=3")
    assert error.startswith("error: --set dataset.params=3: expected a table"), error
    error = _shape_error(tmp_path, capsys, SINE, "backbone.params.widths=[0]")
    assert error.startswith("error: --set backbone.params.widths=[0] (backbone.params): "), error


def test_an_unquoted_string_in_a_set_list_hints_at_quoting(tmp_path, capsys):
    error = _shape_error(tmp_path, capsys, SINE, "grid.learners=[maml]")
    assert "--set grid.learners=[maml]: the value is not valid TOML" in error
    assert """--set 'grid.learners=["maml"]'""" in error


def test_duplicate_seeds_are_an_error(tmp_path, capsys):
    error = _shape_error(tmp_path, capsys, SINE, "grid.seeds=[0, 1, 0]")
    assert "--set grid.seeds=[0, 1, 0]: seed 0 appears twice" in error


def test_an_only_pattern_that_matches_nothing_shows_what_labels_look_like(tmp_path, capsys):
    path = tmp_path / "b.toml"
    path.write_text(SINE)
    assert run(path, "--out", tmp_path / "out", "--dry-run", "--only", "sine-5shot:*/maml/*") == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and "Traceback" not in error, error
    assert "no run matches --only 'sine-5shot:*/maml/*'" in error
    labels = [spec.label for spec in config.load_benchmark(path, default_registry())]
    assert f"its {len(labels)} runs are labelled like '{labels[0]}'" in error


# --- resuming -------------------------------------------------------------------------------------------------------


class _CtrlCAtStep3:
    """Ctrl-C at the third meta-step: the checkpoint of step 2 stays, as after an interrupted run."""

    @hookimpl
    def metabench_step_finished(self, spec, step, metrics):
        if step == 3:
            raise KeyboardInterrupt


def test_a_resumed_run_says_so_and_stale_checkpoint_temporaries_are_removed(tmp_path, monkeypatch, capsys):
    path = write_benchmark(tmp_path / "b.toml", "fake", {"grid.strategies": ["query"]})
    out = tmp_path / "out"
    interrupting = Registry.load(extra_plugins=[fake_components, _CtrlCAtStep3()], entry_points=False)
    monkeypatch.setattr(cli, "default_registry", lambda: interrupting)
    assert run(path, "--out", out) == 130
    (checkpoint,) = (out / "checkpoints").glob("*.pt")
    stale = checkpoint.with_name(f".{checkpoint.name}.k9x_2ab.tmp")  # what a kill -9 in atomic_write leaves
    stale.write_bytes(b"half a checkpoint")
    capsys.readouterr()
    monkeypatch.setattr(cli, "default_registry", lambda: Registry.load([fake_components], entry_points=False))
    assert run(path, "--out", out) == 0
    assert "standard/fake-learner/query/seed=0: resuming at step 2" in capsys.readouterr().out
    assert not stale.exists() and not list((out / "checkpoints").iterdir())
    (record,) = results.load_records(out)
    assert record["resumed_from"] == 2


# --- records and provenance -----------------------------------------------------------------------------------------


def test_records_are_read_in_config_hash_order_whatever_their_file_times(tmp_path, fakes):
    path = tmp_path / "grid.toml"
    path.write_text(FAKE_GRID)
    out = tmp_path / "out"
    assert run(path, "--profile", "quick", "--out", out) == 1  # the "fails" learner fails
    files = sorted((out / "runs").glob("*.json"))
    for age, file in enumerate(files):  # the last name is the oldest file
        os.utime(file, (1_000_000 - age, 1_000_000 - age))
    assert [r["config_hash"] for r in results.load_records(out)] == [f.stem for f in files]
    board = (out / "LEADERBOARD.md").read_text()
    assert main(["leaderboard", str(out)]) == 0
    assert (out / "LEADERBOARD.md").read_text() == board


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True, capture_output=True
    )


def test_changes_under_results_do_not_make_the_commit_dirty(tmp_path):
    repo = tmp_path / "clone"
    (repo / "harness").mkdir(parents=True)
    (repo / "results" / "runs").mkdir(parents=True)
    (repo / "harness" / "code.py").write_text("x = 1\n")
    (repo / "results" / "LEADERBOARD.md").write_text("# old\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "clone")
    commit = results.git_commit(repo / "harness")
    assert commit and "+dirty" not in commit
    (repo / "results" / "LEADERBOARD.md").write_text("# rewritten by tox -e bench\n")
    (repo / "results" / "runs" / "new.json").write_text("{}")
    assert results.git_commit(repo / "harness") == commit
    (repo / "harness" / "code.py").write_text("x = 2\n")
    assert results.git_commit(repo / "harness") == f"{commit}+dirty"


# --- show, plugins --------------------------------------------------------------------------------------------------


def test_show_takes_benchmark_colon_label(tmp_path, capsys):
    out = tmp_path / "out"
    for name in ("one", "two"):
        path = write_benchmark(tmp_path / f"{name}.toml", "sine", {"benchmark.name": name, "grid.learners": ["maml"]})
        assert run(path, "--out", out, "--set", "training.meta_steps=2", "--set", 'grid.strategies=["query"]') == 0
    capsys.readouterr()
    assert main(["show", "standard/maml/query/seed=0", "--results", str(out)]) == 2  # one in each benchmark
    assert "2 runs match" in capsys.readouterr().err
    assert main(["show", "two:*maml/query*", "--results", str(out)]) == 0
    assert capsys.readouterr().out.split("\n", 1)[0].endswith("  two  standard/maml/query/seed=0  [ok]")
    assert main(["show", "t*:standard/maml/query/seed=0", "--results", str(out)]) == 0
    assert main(["show", "three:*", "--results", str(out)]) == 2


def test_the_readme_show_example_finds_one_committed_run(tmp_path, capsys):
    root = Path(__file__).parent.parent
    (example,) = [
        shlex.split(line, comments=True)
        for line in (root / "README.md").read_text().splitlines()
        if line.startswith("metabench show ")
    ]
    shutil.copytree(root / "results" / "runs", tmp_path / "runs")  # show writes the run's plot: not into the clone
    assert main([*example[1:], "--results", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("run ")


def test_plugins_lists_the_reporters(capsys):
    assert main(["plugins", "--json", "--kind", "reporter"]) == 0
    reporters = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert {"tensorboard", "mlflow", "reporters"} <= reporters.keys()
    assert "run_started" in reporters["tensorboard"]["summary"]
    assert main(["plugins"]) == 0
    assert any(line.split()[:2] == ["reporter", "mlflow"] for line in capsys.readouterr().out.splitlines())
