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
        "learner": {"name": "maml", "label": overrides.get("learner", "maml"), "params": overrides.get("params", {})},
        "strategy": {"name": strategy, "label": strategy, "params": {}},
        "backbone": {"name": "conv4", "label": "conv4", "params": {"filters": 32}},
        "protocol": {"n_way": 5, "k_shot": 1, "k_query": 5},
        "training": {"meta_steps": 100, "meta_batch": 4},
        "seed": seed,
        "analysis": {"looks": overrides.get("looks", 1)},
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
        "tasks_hash": overrides.get("tasks", "tasks"),
        "config": config,
        "status": overrides.get("status", "ok"),
        "metrics": {"test": {"mean": float(scores.mean()), "ci95": ci95, "per_task": scores.tolist()}},
    }
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "runs" / f"{name}.json").write_text(json.dumps(record))


def scores(mean: float, seed: int, spread: float = 0.05) -> np.ndarray:
    return np.clip(np.random.default_rng(seed).normal(mean, spread, N_TASKS), 0, 1)


SEED_OFFSETS = (0.004, -0.003, 0.001)  # each training seed moves every task a little


def write_cell(out: Path, strategy: str, mean: float, *, task_seed: int, seeds=(0, 1, 2), **overrides) -> None:
    """Three seeds of one config: the same tasks, each seed shifted by its offset."""
    for seed in seeds:
        values = scores(mean, task_seed) + SEED_OFFSETS[seed % 3]
        name = f"{strategy}-{overrides.get('profile', 'quick')}-{seed}-{overrides.get('tasks', '')}"
        write_record(
            out, name + str(overrides.get("params", "")), strategy=strategy, scores=values, seed=seed, **overrides
        )


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
    write_cell(out, "a", 0.5, task_seed=1)
    write_cell(out, "b", 0.8, task_seed=2)
    write_cell(out, "c", 0.8005, task_seed=2)  # b within a twentieth of a point: equivalent within ±1
    text = run_cli(write_claims(tmp_path / "claims.toml", RANKING), out)
    row = next(line for line in text.splitlines() if line.startswith("| **ranking**"))
    assert "**reproduced**" in row
    means = [100 * (scores(0.5, 1) + offset).mean() for offset in SEED_OFFSETS]
    assert f"A: 40 → {np.mean(means):.2f} ± " in row and "(3 seeds)" in row  # percent of the record's accuracy
    assert "quick: omniglot 5-way 1-shot, 100 steps × 4 tasks" in row
    assert "A < B: ✓" in row and "better, 3 seeds (detect ≥ " in row and "B ~ C: ✓" in row and "equivalent" in row


def test_a_reversed_pair_contradicts_at_the_paper_profile_and_is_not_at_this_scale_below(tmp_path):
    out = tmp_path / "results"
    for profile in ("quick", "paper"):
        write_cell(out, "a", 0.9, task_seed=1, profile=profile)  # A above B
        write_cell(out, "b", 0.6, task_seed=2, profile=profile)
        write_cell(out, "c", 0.6, task_seed=2, profile=profile)
    claims = reproductions.load_claims(write_claims(tmp_path / "claims.toml", RANKING))
    verdicts = reproductions.judge(claims[0], reproductions.results.load_records(out))
    assert [(v.profile, v.verdict) for v in verdicts] == [("paper", "contradicted"), ("quick", "not at this scale")]
    assert "A < B: ✗" in verdicts[0].evidence and "worse" in verdicts[0].evidence and "B ~ C: ✓" in verdicts[0].evidence
    # REPRODUCTIONS.md sums the claim up across its scales, the shorter training first
    text = run_cli(tmp_path / "claims.toml", out)
    (line,) = [line for line in text.splitlines() if line.startswith("- **ranking** as training grows")]
    assert line.index("quick (100 steps) not at this scale") < line.index("paper (100 steps) contradicted")
    # with each scale's Δs, as the table's rows give them
    a_below_b = verdicts[0].evidence.split("; ")[0].removeprefix("A < B: ✗ ")
    assert line.count(f"(A < B: {a_below_b}; B ~ C: ") == 2


def test_records_of_one_profile_at_two_scales_are_judged_apart(tmp_path):
    out = tmp_path / "results"
    for strategy, mean, task_seed in [("a", 0.5, 1), ("b", 0.8, 2), ("c", 0.8, 2)]:
        write_cell(out, strategy, mean, task_seed=task_seed)
    claims = reproductions.load_claims(write_claims(tmp_path / "claims.toml", RANKING))
    records = reproductions.results.load_records(out)
    longer = [{**r, "config": {**r["config"], "training": {"meta_steps": 600, "meta_batch": 4}}} for r in records]
    verdicts = reproductions.judge(claims[0], records + longer[:1])  # the longer profile has only cell A
    assert [v.verdict for v in verdicts] == ["reproduced", "not run"]
    assert "100 steps" in verdicts[0].scale and "600 steps" in verdicts[1].scale


def test_undecided_relations_say_the_seeds_that_would_decide_them(tmp_path):
    out = tmp_path / "results"
    write_cell(out, "a", 0.5, task_seed=1, seeds=(0,))
    write_cell(out, "b", 0.8, task_seed=2, seeds=(0,))
    write_cell(out, "c", 0.8, task_seed=2, seeds=(0,))
    claims = reproductions.load_claims(write_claims(tmp_path / "claims.toml", RANKING))
    (one,) = reproductions.judge(claims[0], reproductions.results.load_records(out))
    assert one.verdict == "undecided" and "1 seed: run ≥ 2 to decide" in one.evidence
    assert one.ours[0].endswith("(1 seed, no CI)")
    noisy = tmp_path / "noisy"
    for seed, noise in [(0, 0.01), (1, -0.01)]:  # B above A by 1.5 points, the two seeds disagree by 2
        write_record(noisy, f"a{seed}", strategy="a", scores=scores(0.5, 1), seed=seed)
        write_record(noisy, f"b{seed}", strategy="b", scores=scores(0.5, 1) + 0.015 + noise, seed=seed)
    claim = reproductions.load_claims(write_claims(tmp_path / "two.toml", RANKING.split("relations")[0] + TWO))[0]
    (two,) = reproductions.judge(claim, reproductions.results.load_records(noisy))
    assert two.verdict == "undecided" and re.search(r"≈ \d+ seeds would detect", two.evidence)


TWO = """relations = ["<"]
cells = [{ label = "A", paper = 40.0, strategy = "a" }, { label = "B", paper = 80.0, strategy = "b" }]
"""


def test_different_seeds_different_tasks_and_different_configs_are_never_paired_or_averaged(tmp_path):
    claim = reproductions.load_claims(write_claims(tmp_path / "two.toml", RANKING.split("relations")[0] + TWO))[0]
    seeds = tmp_path / "seeds"
    write_cell(seeds, "a", 0.5, task_seed=1, seeds=(0, 1))
    write_cell(seeds, "b", 0.8, task_seed=2, seeds=(2,))
    (verdict,) = reproductions.judge(claim, reproductions.results.load_records(seeds))
    assert verdict.verdict == "undecided" and "not compared: no seed in common" in verdict.evidence
    tasks = tmp_path / "tasks"
    write_cell(tasks, "a", 0.5, task_seed=1)
    write_cell(tasks, "b", 0.8, task_seed=2, tasks="other")
    (verdict,) = reproductions.judge(claim, reproductions.results.load_records(tasks))
    assert "not compared: evaluated on different tasks" in verdict.evidence
    configs = tmp_path / "configs"
    write_cell(configs, "a", 0.5, task_seed=1)
    write_cell(configs, "b", 0.8, task_seed=2)
    write_cell(configs, "b", 0.7, task_seed=2, params={"inner_lr": 0.1})
    (verdict,) = reproductions.judge(claim, reproductions.results.load_records(configs))
    assert verdict.verdict == "ambiguous" and "B: several configs match (never averaged)" in verdict.evidence


def test_seeds_are_averaged_and_the_ci_is_a_t_interval_over_seeds_by_hand(tmp_path):
    from scipy import stats

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
    mean, ci = np.mean(means), stats.t.ppf(0.975, 2) * np.std(means, ddof=1) / math.sqrt(3)
    assert verdict.ours == (f"{mean:.2f} ± {ci:.2f} (3 seeds)",)
    assert verdict.verdict == "not at this scale"  # paper 40 vs ours ~62


@pytest.mark.parametrize(("paper", "expected"), [(4.72, "reproduced"), (5.0, "not at this scale")])
def test_a_value_claim_holds_when_the_paper_number_is_within_tolerance(tmp_path, paper, expected):
    out = tmp_path / "results"
    for seed in range(3):
        values = np.full(N_TASKS, 4.7 + 0.001 * seed) + np.linspace(-0.01, 0.01, N_TASKS)
        write_record(out, f"slope{seed}", strategy="query", scores=values, seed=seed)
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
    assert verdict.ours[0].startswith("4.70 ± ") and verdict.ours[0].endswith("(3 seeds)")


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


@pytest.mark.parametrize(("looks", "mark"), [(1, "✓"), (2, "?")])
def test_cells_run_until_decided_are_judged_at_alpha_over_their_looks(tmp_path, looks, mark):
    """Paired seed differences of +3, +4, +5.5 points: p = 0.029 (t = 5.74, 2 df), decided at 5%, not at 5% / 2."""
    out = tmp_path / "results"
    for seed, gain in enumerate((0.03, 0.04, 0.055)):
        for strategy, mean in (("a", 0.5), ("b", 0.5 + gain)):
            values = np.full(N_TASKS, mean)
            write_record(out, f"{strategy}{seed}", strategy=strategy, scores=values, seed=seed, looks=looks)
    two_cells = RANKING.replace('["<", "~"]', '["<"]').replace(
        '    { label = "C", paper = 81.0, strategy = "c" },\n', ""
    )
    (claim,) = reproductions.load_claims(write_claims(tmp_path / "claims.toml", two_cells))
    (verdict,) = reproductions.judge(claim, reproductions.results.load_records(out))
    assert f"A < B: {mark}" in verdict.evidence, verdict.evidence
