"""The leaderboard's verdicts are calibrated: on synthetic records of one generating process for both strategies
(benchmarks/calibrate.py), written to a folder and read back through ``metabench leaderboard``, ``better`` / ``worse``
come out at most at the nominal 5% (within Monte-Carlo error), also when seeds are added until decided; a true
+3-point Δ is found."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

from metabench import cli, inference

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "calibrate.py"
_SPEC = importlib.util.spec_from_file_location("calibrate", _PATH)
calibrate = sys.modules.setdefault("calibrate", importlib.util.module_from_spec(_SPEC))
_SPEC.loader.exec_module(calibrate)
Scenario = calibrate.Scenario

AA = [Scenario(n, spread) for n in (2, 5, 10) for spread in (1.0, 3.0)] + [Scenario(3, 1.0)]
DONE_WHEN = Scenario(3, 3.0)  # the bar: at most 8% over 200 benchmarks
POWER = Scenario(5, 1.0, 3.0)
SEQUENTIAL = [Scenario(3, 3.0, 0.0, 10), Scenario(3, 1.0, 0.0, 10)]
# 100 sequential benchmarks at a 3-point spread: looking three times without the α split gives 12% there, over the bound
COUNTS = {DONE_WHEN: 200, POWER: 60, SEQUENTIAL[0]: 100, SEQUENTIAL[1]: 40} | dict.fromkeys(AA, 40)


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory) -> pd.DataFrame:
    """One records folder holding every synthetic benchmark (one table each), one ``metabench leaderboard`` call."""
    out = tmp_path_factory.mktemp("calibration")
    for scenario, count in COUNTS.items():
        calibrate.write_benchmarks(out, [scenario], count)
    assert cli.main(["leaderboard", str(out), "--no-plots"]) == 0
    table = pd.read_csv(out / "leaderboard.csv")
    compared = table[table["strategy"] == "metamix"].copy()
    compared["scenario"] = compared["benchmark"].str.rsplit("-", n=1).str[0]
    return compared


def _bound(count: int) -> float:
    """The nominal rate plus two Monte-Carlo standard errors of a rate of 5% over ``count`` benchmarks."""
    return inference.ALPHA + 2 * math.sqrt(inference.ALPHA * (1 - inference.ALPHA) / count)


def _false_rate(verdicts: pd.DataFrame, scenario: Scenario) -> float:
    mine = verdicts[verdicts["scenario"] == scenario.name]
    assert len(mine) == COUNTS[scenario]
    return float(mine["verdict"].isin(["better", "worse"]).mean())


@pytest.mark.parametrize("scenario", AA, ids=lambda s: s.name)
def test_a_a_better_or_worse_at_most_at_the_nominal_rate(verdicts, scenario):
    assert _false_rate(verdicts, scenario) <= _bound(COUNTS[scenario])


def test_a_a_with_three_seeds_and_a_three_point_seed_spread_stays_under_8_percent(verdicts):
    assert _false_rate(verdicts, DONE_WHEN) <= 0.08


def test_a_true_three_point_gain_at_five_seeds_is_better_in_80_percent_and_never_worse(verdicts):
    mine = verdicts[verdicts["scenario"] == POWER.name]
    assert (mine["verdict"] == "better").mean() >= 0.8
    assert not (mine["verdict"] == "worse").any()


@pytest.mark.parametrize("scenario", SEQUENTIAL, ids=lambda s: s.name)
def test_run_until_decided_keeps_the_error_rate_and_adds_seeds_in_rounds(verdicts, scenario):
    assert _false_rate(verdicts, scenario) <= _bound(COUNTS[scenario])
    mine = verdicts[verdicts["scenario"] == scenario.name]
    undecided = mine[mine["verdict"] == "undecided"]
    assert (undecided["paired_seeds"] == scenario.max_seeds).all()  # undecided ones went to the maximum
    assert set(mine["rounds"]) <= {1, 2, 3} and (mine["rounds"] == 3).any()  # 3 -> 6 -> 10 seeds
    assert mine["alpha"].to_numpy() == pytest.approx(inference.ALPHA / 3)
