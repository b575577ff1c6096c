"""A metric's goal (maximize, minimize, or a target value), honoured by every table the leaderboard writes."""

from __future__ import annotations

import re

import pytest
from test_leaderboard import record, store

from metabench.cli import main
from metabench.errors import MetabenchError
from metabench.leaderboard import aggregate, runs_frame
from metabench.metrics import describe, goal_of, signed

SLOPES = {"query": 4.7, "metamix": 5.05, "cob": 5.4}  # closest to the truth 5.0: metamix, query, cob


def slope_records(goal) -> list[dict]:
    records = []
    for strategy, slope in SLOPES.items():
        for seed in (0, 1):
            made = record("maml", strategy, seed, [slope - 0.02 + 0.01 * i + 0.001 * seed for i in range(5)])
            made["metric"] = {"name": "slope", "goal": goal}
            records.append(made)
    return records


def test_a_target_goal_ranks_and_bolds_the_closest_score_in_every_format(tmp_path):
    store(tmp_path, slope_records({"target": 5.0}))
    assert main(["leaderboard", str(tmp_path), "--format", "md,latex,html"]) == 0
    markdown = (tmp_path / "LEADERBOARD.md").read_text()
    assert "slope (closer to 5.0 is better)" in markdown
    rows = {line.split("|")[4].strip(): line for line in markdown.splitlines() if "| maml " in line}
    assert "**5.05**" in rows["metamix"] and "**" not in rows["cob"] + rows["query"]
    assert [rows[s].split("|")[1].strip() for s in ("metamix", "query", "cob")] == ["1", "2", "3"]
    latex = (tmp_path / "leaderboard.tex").read_text()
    assert re.findall(r"\\textbf\{([\d.]+)", latex) == ["5.05"]
    page = (tmp_path / "leaderboard.html").read_text()
    assert re.findall(r'class="num best">([\d.]+)', page) == ["5.05"]


def test_records_that_say_higher_is_better_rank_as_their_goal_says():
    old = slope_records("minimize")
    for made in old:
        made["metric"] = {"name": "slope", "higher_is_better": False}
    new = slope_records("minimize")
    ranks = [aggregate(runs_frame(rs)).set_index("strategy")["rank"].to_dict() for rs in (old, new)]
    assert ranks[0] == ranks[1] and ranks[0]["query"] == 1


def test_signed_scores_put_the_better_one_higher():
    assert signed("maximize", 0.7) > signed("maximize", 0.6)
    assert signed("minimize", 0.1) > signed("minimize", 0.2)
    assert signed({"target": 5.0}, 4.9) > signed({"target": 5.0}, 5.2) > signed({"target": 5.0}, 4.7)
    assert describe("minimize") == "lower is better"
    assert goal_of({"name": "mse"}) == "maximize"  # what records without either key meant


@pytest.mark.parametrize("goal", ["closest", {"target": "5"}, {"aim": 5.0}])
def test_an_unknown_goal_is_an_error_naming_it(goal):
    with pytest.raises(MetabenchError, match=r"metric 'slope': goal .* is not one of \"maximize\", \"minimize\""):
        goal_of({"name": "slope", "goal": goal})
