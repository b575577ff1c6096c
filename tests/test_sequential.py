"""``metabench run FILE --until-decided``: seeds added in rounds to the cells of undecided comparisons, through the CLI
on the fake components (tests/fake_components.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from benchmark_files import run, write_benchmark

from metabench import cli, inference, results, sequential

SEEDS = {"grid.seeds": [0, 1], "protocol.eval_tasks": 6}


def _rounds(out: Path) -> dict[tuple[str, int], int]:
    return {
        (r["config"]["strategy"]["label"], r["config"]["seed"]): r["config"]["analysis"]["round"]
        for r in results.load_records(out)
    }


def test_the_schedule_doubles_and_new_seeds_follow_the_grids():
    assert sequential.schedule(3, 10) == [3, 6, 10] and sequential.schedule(2, 2) == [2]
    assert sequential.seed_list([5, 0], 4) == [5, 0, 6, 7]


def test_undecided_comparisons_get_seeds_in_rounds_up_to_the_maximum(fakes, tmp_path, capsys):
    grid = write_benchmark(tmp_path / "grid.toml", "fake", SEEDS)
    out = tmp_path / "out"
    assert run(grid, "--out", out, "--until-decided", "--max-seeds", "4") == 0
    printed = capsys.readouterr().out
    csv = pd.read_csv(out / "leaderboard.csv").set_index("strategy")
    rounds = _rounds(out)
    if csv.loc["support", "verdict"] == "undecided":  # the fake runs are too short to tell support from query
        assert "round 2/2: 1 comparison(s) undecided; seeds 2-3 for 2 cell(s), 4 runs" in printed
        assert rounds == {(s, seed): 1 + (seed >= 2) for s in ("query", "support") for seed in range(4)}
        assert csv.loc["support", "rounds"] == 2 and csv.loc["support", "paired_seeds"] == 4
    else:
        assert set(rounds.values()) == {1} and "every comparison is decided" in printed
    assert csv.loc["support", "alpha"] == pytest.approx(inference.ALPHA / 2)
    text = (out / "LEADERBOARD.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| rank"))
    assert [c.strip() for c in header.strip("|").split("|")].count("rounds") == 1
    assert "1 − 0.05/2" in text
    # a second call finds every record: nothing runs again, the same verdict
    assert run(grid, "--out", out, "--until-decided", "--max-seeds", "4") == 0
    assert "nothing to run" in capsys.readouterr().out and _rounds(out) == rounds


def test_the_file_can_ask_for_it_and_the_dry_run_shows_the_rounds(fakes, tmp_path, capsys):
    seeds = {"start": [0, 1, 2], "until_decided": True, "max": 10}
    grid = write_benchmark(tmp_path / "grid.toml", "fake", {**SEEDS, "grid.seeds": seeds})
    assert run(grid, "--out", tmp_path / "out", "--dry-run") == 0
    printed = capsys.readouterr().out
    assert "3 planned look(s), each testing at α = 0.05/3" in printed
    assert "round 1: seeds 0-2 for all 2 cells (6 runs)" in printed
    assert "round 2: seeds 3-5 for the cells of comparisons still undecided (at most 6 runs)" in printed
    assert "round 3: seeds 6-9" in printed
    assert not (tmp_path / "out" / "runs").exists()


@pytest.mark.parametrize(
    ("flags", "seeds", "message"),
    [
        (["--max-seeds", "4"], [0, 1], "--max-seeds 4: only with --until-decided"),
        (["--until-decided"], [0, 1], "--until-decided: give --max-seeds N"),
        (["--until-decided", "--max-seeds", "1"], [0, 1], "--max-seeds 1: fewer than the grid's 2 seeds"),
        ([], {"start": [0], "until_decided": True}, "until_decided = true needs max = N"),
        ([], {"start": [0], "max": 3, "until_decided": "yes"}, "until_decided = true needs max = N"),
    ],
)
def test_bad_until_decided_settings_exit_2_saying_why(fakes, tmp_path, capsys, flags, seeds, message):
    grid = write_benchmark(tmp_path / "grid.toml", "fake", {**SEEDS, "grid.seeds": seeds})
    assert cli.main(["run", str(grid), "--out", str(tmp_path / "out"), "--dry-run", *flags]) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
