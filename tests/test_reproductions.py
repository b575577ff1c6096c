"""``metabench reproductions``: claims judged against run records, through the CLI and the module."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from metabench import cli, reproductions, schema

N_TASKS = 200


def write_record(out: Path, name: str, *, strategy: str, scores, seed: int = 0, profile: str = "quick", **overrides):
    """A run record of the current schema; the reproductions table reads its config, status and metrics.test."""
    scores = np.asarray(scores, dtype=np.float64)
    config = {
        "benchmark": overrides.get("benchmark", "bench"),
        "profile": profile,
        "dataset": {"name": "omniglot", "label": "omniglot", "params": {}},
        "sampler": {"name": "nme", "label": overrides.get("sampler", "nme"), "params": {}},
        "learner": {"name": "maml", "label": overrides.get("learner", "maml"), "params": {}},
        "strategy": {"name": strategy, "label": strategy, "params": {}},
        "backbone": {"name": "conv4", "label": "conv4", "params": {"filters": 32}},
        "protocol": {"n_way": 5, "k_shot": 1, "k_query": 5},
        "training": {"meta_steps": 100, "meta_batch": 4},
        "seed": seed,
    }
    ci95 = 1.96 * scores.std(ddof=1) / math.sqrt(scores.size)
    record = {
        "schema": schema.SCHEMA_VERSION,
        "config_hash": name,
        "code_hash": "code",
        "label": f"{config['sampler']['label']}/{config['learner']['label']}/{strategy}/seed={seed}",
        "provenance": {},
        "environment": {},
        "error": None,
        "strategy_plain": False,
        "tasks_hash": "tasks",
        "config": config,
        "status": overrides.get("status", "ok"),
        "metrics": {"test": {"mean": float(scores.mean()), "ci95": ci95, "per_task": scores.tolist()}},
    }
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "runs" / f"{name}.json").write_text(json.dumps(record))


def scores(mean: float, seed: int, spread: float = 0.05) -> np.ndarray:
    return np.clip(np.random.default_rng(seed).normal(mean, spread, N_TASKS), 0, 1)


def write_claims(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


RANKING = """
[[claim]]
id = "ranking"
claim = "a < b ~ c"
paper = "Paper, Table 1"
benchmark = "bench"
paper_profile = "paper"
relations = ["<", "~"]
cells = [
    { label = "A", paper = 40.0, strategy = "a" },
    { label = "B", paper = 80.0, strategy = "b" },
    { label = "C", paper = 81.0, strategy = "c" },
]
"""


def run_cli(claims: Path, out: Path) -> str:
    assert cli.main(["reproductions", str(claims), "--results", str(out)]) == 0
    return (out / "REPRODUCTIONS.md").read_text()


def test_a_ranking_that_holds_is_reproduced_with_our_numbers_and_scale(tmp_path):
    out = tmp_path / "results"
    write_record(out, "a", strategy="a", scores=scores(0.5, 1))
    write_record(out, "b", strategy="b", scores=scores(0.8, 2))
    same = scores(0.8, 2) + np.random.default_rng(3).normal(0, 0.01, N_TASKS)  # b plus noise: no real difference
    write_record(out, "c", strategy="c", scores=same)
    text = run_cli(write_claims(tmp_path / "claims.toml", RANKING), out)
    row = next(line for line in text.splitlines() if line.startswith("| **ranking**"))
    assert "**reproduced**" in row
    assert f"A: 40 → {100 * scores(0.5, 1).mean():.2f} ± " in row  # percent of the record's accuracy
    assert "quick: omniglot 5-way 1-shot, 100 steps × 4 tasks" in row


def test_a_reversed_pair_contradicts_at_the_paper_profile_and_is_not_at_this_scale_below(tmp_path):
    out = tmp_path / "results"
    for profile in ("quick", "paper"):
        write_record(out, f"a-{profile}", strategy="a", scores=scores(0.9, 1), profile=profile)  # A above B
        write_record(out, f"b-{profile}", strategy="b", scores=scores(0.6, 2), profile=profile)
        write_record(out, f"c-{profile}", strategy="c", scores=scores(0.6, 2), profile=profile)
    claims = reproductions.load_claims(write_claims(tmp_path / "claims.toml", RANKING))
    verdicts = reproductions.judge(claims[0], reproductions.results.load_records(out))
    assert [(v.profile, v.verdict) for v in verdicts] == [("paper", "contradicted"), ("quick", "not at this scale")]
    assert "A < B: ✗" in verdicts[0].evidence and "B ~ C: ✓" in verdicts[0].evidence


def test_records_of_one_profile_at_two_scales_are_judged_apart(tmp_path):
    out = tmp_path / "results"
    for name, strategy, mean in [("a", "a", 0.5), ("b", "b", 0.8), ("c", "c", 0.8)]:
        write_record(out, name, strategy=strategy, scores=scores(mean, 1 + "abc".index(name) % 2))
    claims = reproductions.load_claims(write_claims(tmp_path / "claims.toml", RANKING))
    records = reproductions.results.load_records(out)
    longer = [{**r, "config": {**r["config"], "training": {"meta_steps": 600, "meta_batch": 4}}} for r in records]
    verdicts = reproductions.judge(claims[0], records + longer[:1])  # the longer profile has only cell A
    assert [v.verdict for v in verdicts] == ["reproduced", "not run"]
    assert "100 steps" in verdicts[0].scale and "600 steps" in verdicts[1].scale


def test_a_missing_or_failed_cell_is_not_run(tmp_path):
    out = tmp_path / "results"
    write_record(out, "a", strategy="a", scores=scores(0.5, 1))
    write_record(out, "b", strategy="b", scores=scores(0.8, 2), status="failed")
    claims = reproductions.load_claims(write_claims(tmp_path / "claims.toml", RANKING))
    (verdict,) = reproductions.judge(claims[0], reproductions.results.load_records(out))
    assert verdict.verdict == "not run" and "B, C" in verdict.evidence
    assert verdict.ours[1:] == ("not run", "not run")
    (nothing,) = reproductions.judge(claims[0], [])
    assert nothing.verdict == "not run" and nothing.profile is None


def test_seeds_are_averaged_and_the_ci_is_over_seeds_by_hand(tmp_path):
    out = tmp_path / "results"
    means = []
    for seed in range(3):
        values = scores(0.6 + 0.02 * seed, 10 + seed)
        means.append(100 * values.mean())
        write_record(out, f"a{seed}", strategy="a", scores=values, seed=seed)
    claims = reproductions.load_claims(
        write_claims(
            tmp_path / "claims.toml",
            RANKING.replace('kind = "ranking"', "")
            .replace('relations = ["<", "~"]', 'kind = "value"\ntolerance = 0.5')
            .replace(
                """    { label = "B", paper = 80.0, strategy = "b" },
    { label = "C", paper = 81.0, strategy = "c" },
""",
                "",
            ),
        )
    )
    (verdict,) = reproductions.judge(claims[0], reproductions.results.load_records(out))
    mean, ci = np.mean(means), 1.96 * np.std(means, ddof=1) / math.sqrt(3)
    assert verdict.ours == (f"{mean:.2f} ± {ci:.2f} (3 seeds)",)
    assert verdict.verdict == "not at this scale"  # paper 40 vs ours ~62


@pytest.mark.parametrize(("paper", "expected"), [(4.72, "reproduced"), (5.0, "not at this scale")])
def test_a_value_claim_holds_when_the_paper_number_is_within_tolerance(tmp_path, paper, expected):
    out = tmp_path / "results"
    write_record(out, "slope", strategy="query", scores=np.full(N_TASKS, 4.7) + np.linspace(-0.01, 0.01, N_TASKS))
    claims = write_claims(
        tmp_path / "claims.toml",
        f"""
[[claim]]
id = "slope"
claim = "the slope"
paper = "Paper, App. A"
benchmark = "bench"
paper_profile = "paper"
kind = "value"
units = "raw"
tolerance = 0.05
cells = [{{ label = "slope", paper = {paper}, strategy = "query" }}]
""",
    )
    (verdict,) = reproductions.judge(reproductions.load_claims(claims)[0], reproductions.results.load_records(out))
    assert verdict.verdict == expected
    assert verdict.ours[0].startswith("4.70 ± ")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "expected \\[\\[claim\\]\\] tables"),
        (RANKING.replace('relations = ["<", "~"]', 'relations = ["<"]'), "one relation between each consecutive"),
        (RANKING.replace('relations = ["<", "~"]', 'relations = ["<", ">"]'), r"claim\[0\].relations: \['>'\]"),
        (RANKING.replace('label = "A", ', 'label = "A", model = "x", '), r"cells\[0\]: unknown key\(s\) \['model'\]"),
        (RANKING.replace('paper_profile = "paper"', ""), r"claim\[0\].paper_profile = None"),
    ],
)
def test_a_bad_claims_file_exits_2_naming_file_and_key(tmp_path, capsys, body, message):
    claims = write_claims(tmp_path / "claims.toml", body)
    assert cli.main(["reproductions", str(claims), "--results", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert str(claims) in error and "Traceback" not in error
    assert re.search(message, error), error


def test_the_shipped_claims_file_loads_and_judges_every_claim_as_not_run_without_records():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "reproductions.toml"
    claims = reproductions.load_claims(path)
    assert {"nme-strategy-ranking", "maml-metamix", "lasium-ro-maml", "toy-slope-metamix"} <= {c.id for c in claims}
    assert all(reproductions.judge(claim, [])[0].verdict == "not run" for claim in claims)
