"""Leaderboard aggregation, the paired test, and the rendered Markdown / CSV / plot files."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from benchmark_files import run, write_benchmark
from scipy import stats

from metabench import results
from metabench.cli import main
from metabench.config import load_benchmark
from metabench.inference import VERDICTS, compare, holm, verdict
from metabench.leaderboard import aggregate, runs_frame, scale_text, write_leaderboard
from metabench.schema import SCHEMA_VERSION


def record(
    learner: str,
    strategy: str,
    seed: int,
    per_task: list[float],
    *,
    status: str = "ok",
    metric: str = "accuracy",
    error: str | None = None,
    benchmark: str = "bench",
    plain: bool | None = None,
    tasks: str | None = None,
) -> dict:
    scored = status == "ok"
    return {
        "schema": SCHEMA_VERSION,
        "code_hash": "code",
        "provenance": {"device_type": "cpu"},
        "strategy_plain": strategy == "query" if plain is None else plain,
        "tasks_hash": tasks or f"tasks-{benchmark}",
        "config_hash": f"{benchmark}-{learner}-{strategy}-{seed}",
        "label": f"standard/{learner}/{strategy}/seed={seed}",
        "config": {
            "benchmark": benchmark,
            "profile": "quick",
            "sampler": {"name": "standard", "label": "standard"},
            "learner": {"name": learner, "label": learner},
            "strategy": {"name": strategy, "label": strategy},
            "seed": seed,
        },
        "environment": {"device_name": "CPU (test)", "commit": "abc1234"},
        "status": status,
        "error": error,
        "metric": {"name": metric, "higher_is_better": metric == "accuracy"},
        "metrics": {"test": {"mean": float(np.mean(per_task)), "per_task": per_task}} if scored else {},
        "steps_per_s": 2.0 if scored else None,
        "meta_overfitting": {"meta_train": {"pre": 0.2, "post": 0.9}, "meta_test": {"pre": 0.2, "post": 0.6}},
        "diagnostics": {"grad_norm_support": 0.5, "grad_norm_query": 1.5},
        "curves": [
            {"step": 1, "train_pre": 0.2, "train_post": 0.5, "val_pre": 0.2, "val_post": 0.4},
            {"step": 2, "train_pre": 0.3, "train_post": 0.7, "val_pre": 0.2, "val_post": 0.5},
        ]
        if scored
        else [],
    }


def store(out: Path, records: list[dict]) -> None:
    (out / "runs").mkdir(parents=True)
    for r in records:
        (out / "runs" / f"{r['config_hash']}.json").write_text(json.dumps(r))


def test_a_delta_pairs_per_seed_means_by_seed_with_t_quantiles_by_hand():
    mine = {0: 0.62, 1: 0.60, 2: 0.66, 7: 0.5}  # seed 7 has no partner: left out
    baseline = {0: 0.58, 1: 0.59, 2: 0.61, 3: 0.9}
    d = np.array([0.04, 0.01, 0.05])
    se = d.std(ddof=1) / math.sqrt(3)
    comparison = compare(mine, baseline)
    assert comparison.seeds == (0, 1, 2) and comparison.delta == pytest.approx(d.mean())
    assert comparison.p_value == pytest.approx(2 * stats.t.sf(d.mean() / se, df=2))
    assert comparison.ci_high - comparison.delta == pytest.approx(stats.t.ppf(0.975, 2) * se)
    assert comparison.mde == pytest.approx((stats.t.ppf(0.975, 2) + stats.t.ppf(0.8, 2)) * d.std(ddof=1) / math.sqrt(3))
    one = compare({0: 0.7}, {0: 0.6})
    assert one.delta == pytest.approx(0.1) and math.isnan(one.p_value)
    assert verdict(one, one.p_value, 0.01, True) == "undecided"


def test_holm_adjusts_in_step_down_order_and_skips_untested_comparisons():
    adjusted = holm([0.01, np.nan, 0.04, 0.03])
    assert adjusted[0] == pytest.approx(0.03) and math.isnan(adjusted[1])
    assert adjusted[3] == pytest.approx(0.06) and adjusted[2] == pytest.approx(0.06)  # monotone: max with the previous


def test_aggregate_over_seeds_and_delta_vs_query():
    base = [0.5, 0.6, 0.7, 0.8]
    records = [
        record("maml", "query", 0, base),
        record("maml", "query", 1, [s + 0.02 for s in base]),
        record("maml", "metamix", 0, [s + 0.10 for s in base]),
        record("maml", "metamix", 1, [s + 0.08 for s in base[:2]] + [s + 0.12 for s in base[2:]]),
    ]
    cells = aggregate(runs_frame(records)).set_index("strategy")
    assert cells.loc["query", "mean"] == pytest.approx(np.mean(base) + 0.01)
    seed_means = [np.mean(base), np.mean(base) + 0.02]
    assert cells.loc["query", "ci95"] == pytest.approx(
        stats.t.ppf(0.975, 1) * np.std(seed_means, ddof=1) / math.sqrt(2)
    )
    assert cells.loc["metamix", "delta"] == pytest.approx(0.09)
    assert cells.loc["metamix", "rank"] == 1 and cells.loc["query", "rank"] == 2
    assert math.isnan(cells.loc["query", "delta"]) and cells.loc["query", "verdict"] == ""
    # per-seed differences +0.10 and +0.08: t = 9 on one degree of freedom, p ≈ 0.07; two seeds cannot decide it
    assert cells.loc["metamix", "p_value"] == pytest.approx(2 * stats.t.sf(9.0, 1))
    assert cells.loc["metamix", "verdict"] == "undecided"
    assert cells.loc["metamix", "paired_seeds"] == 2


def test_verdicts_better_worse_equivalent_undecided_and_their_words(tmp_path):
    rng = np.random.default_rng(0)
    tasks = list(rng.uniform(0.3, 0.9, 50))
    seeds = range(5)
    offsets = [0.002, -0.001, 0.0015, -0.002, 0.0005]
    records = [record("maml", "query", s, [x + offsets[s] for x in tasks]) for s in seeds]
    for name, shift, jitter in [
        ("up", 0.05, 0.001),
        ("down", -0.05, 0.001),
        ("same", 0.0, 0.0005),
        ("noisy", 0.0, 0.05),
    ]:
        records += [
            record("maml", name, s, [x + offsets[s] + shift + jitter * (-1) ** s * s for x in tasks]) for s in seeds
        ]
    records += [record("maml", "lonely", 0, [x + 0.2 for x in tasks])]
    store(tmp_path, records)
    write_leaderboard(tmp_path, plots=False)
    csv = pd.read_csv(tmp_path / "leaderboard.csv").set_index("strategy")
    assert csv.loc["up", "verdict"] == "better" and csv.loc["down", "verdict"] == "worse"
    assert csv.loc["same", "verdict"] == "equivalent" and csv.loc["noisy", "verdict"] == "undecided"
    assert csv.loc["lonely", "verdict"] == "undecided" and csv.loc["lonely", "paired_seeds"] == 1
    assert set(csv["verdict"].dropna()) <= set(VERDICTS)
    for column in ("delta", "delta_ci_low", "delta_ci_high", "p_value", "p_holm", "mde", "ci95"):
        assert column in csv
    assert (csv["p_holm"].dropna() >= csv["p_value"].dropna()).all()
    text = (tmp_path / "LEADERBOARD.md").read_text()
    noisy = next(line for line in text.splitlines() if "| noisy" in line)
    assert re.search(r"undecided \(5 seeds: detects ≥ \d+\.\d\)", noisy)
    assert "equivalent (within ±1)" in text and "1 seed: needs ≥ 2" in text and "Holm" in text
    assert not (tmp_path / "leaderboard.png").exists()  # plots=False


def test_leaderboard_files(tmp_path):
    base = list(np.linspace(0.3, 0.9, 20))
    store(
        tmp_path,
        [
            record("maml", "query", 0, base),
            record("maml", "metamix", 0, [s + 0.05 for s in base]),
            record("protonet", "query", 0, [s + 0.01 for s in base]),
            record("protonet", "metamix", 0, [], status="not-applicable", error="protonet has no inner loop"),
            record("maml", "cob", 0, [], status="failed", error="NonFiniteLoss: meta-loss is nan at step 3"),
        ],
    )
    paths = write_leaderboard(tmp_path)
    names = [p.name for p in paths]
    assert names[:3] == ["LEADERBOARD.md", "leaderboard.csv", "leaderboard.png"]
    assert sum(name.endswith(".png") for name in names) == 1 + 3  # the summary plot and one per successful run
    text = (tmp_path / "LEADERBOARD.md").read_text()
    assert "commit abc1234" in text and "device CPU (test)" in text and "profile quick" in text
    assert "## bench (profile `quick`)" in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header[:5] == ["rank", "sampler", "learner", "strategy", "accuracy %"]
    first = [c.strip() for c in table[2].strip("|").split("|")]
    assert first[:5] == ["1", "standard", "maml", "metamix", f"**{np.mean(base) * 100 + 5:.2f}**"]
    assert first[header.index("Δ vs plain")] == "+5.00" and first[header.index("plain")] == "query"
    assert first[header.index("verdict")] == "undecided (1 seed: needs ≥ 2 to measure the seed spread)"
    assert "**not-applicable** standard/protonet/metamix seed 0: protonet has no inner loop" in text
    assert "**failed** standard/maml/cob seed 0: NonFiniteLoss" in text
    assert "### Analyses" in text and "‖∇‖ support" in text
    csv = pd.read_csv(tmp_path / "leaderboard.csv")
    assert len(csv) == 3 and set(csv["strategy"]) == {"query", "metamix"}


def test_lower_is_better_for_regression_next_to_a_classification_benchmark(tmp_path):
    store(
        tmp_path,
        [
            record("maml", "query", 0, [0.5, 0.6, 0.7]),
            record("maml", "metamix", 0, [0.6, 0.7, 0.8]),
            record("maml", "query", 0, [1.0, 2.0, 3.0], metric="mse", benchmark="sine"),
            record("maml", "metamix", 0, [0.5, 1.0, 1.5], metric="mse", benchmark="sine"),
        ],
    )
    write_leaderboard(tmp_path)
    text = (tmp_path / "LEADERBOARD.md").read_text()
    bench, sine = text.split("## sine")
    assert "mse (lower is better)" in sine
    first = [line for line in sine.splitlines() if line.startswith("|")][2]
    assert "metamix" in first and "**1.00**" in first
    first = [line for line in bench.splitlines() if line.startswith("|")][2]
    assert "metamix" in first and "**70.00**" in first


def test_the_baseline_is_the_plain_strategy_and_only_identical_tasks_are_paired(tmp_path):
    base = [0.5, 0.6, 0.7, 0.8]
    records = [
        record("maml", "dq", 0, base, plain=True),  # a plain strategy under another name than "query"
        record("maml", "query", 0, [s + 0.3 for s in base], plain=False),
        record("maml", "metamix", 0, [s + 0.1 for s in base], plain=False),
        record("maml", "cob", 0, [s + 0.2 for s in base], plain=False, tasks="other-tasks"),
    ]
    cells = aggregate(runs_frame(records)).set_index("strategy")
    assert math.isnan(cells.loc["dq", "delta"])
    assert cells.loc["query", "delta"] == pytest.approx(0.3) and cells.loc["query", "baseline"] == "dq"
    assert cells.loc["metamix", "delta"] == pytest.approx(0.1)
    assert math.isnan(cells.loc["cob", "delta"]) and cells.loc["cob", "not_tested"] == "evaluated on different tasks"
    store(tmp_path, records)
    write_leaderboard(tmp_path)
    cob = next(line for line in (tmp_path / "LEADERBOARD.md").read_text().splitlines() if "| cob" in line)
    assert "not tested: evaluated on different tasks" in cob


def test_records_of_one_label_on_different_tasks_are_not_averaged():
    base = [0.5, 0.6, 0.7, 0.8]
    records = [record("maml", "query", 0, base), record("maml", "query", 1, base[:2], tasks="fewer-tasks")]
    cells = aggregate(runs_frame(records))
    assert len(cells) == 2 and list(cells["seeds"]) == [1, 1]
    assert set(cells["variant"]) == {"evaluation tasks tasks-bench", "evaluation tasks fewer-tasks"}


# --- a report that leads with the answer (issue 26) ----------------------------------------------------------------


def _sections(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("## ")]


def test_the_benchmark_the_command_ran_leads_every_file_and_each_table_states_its_scale(tmp_path, fakes, capsys):
    out = tmp_path / "out"
    small = {"benchmark.name": "aa-fake", "training.meta_steps": 2, "backbone.params": {"hidden": 8}}
    aa = write_benchmark(tmp_path / "aa.toml", "fake", small)
    fake = write_benchmark(tmp_path / "fake.toml", "fake", {"benchmark.name": "zz-fake"})
    assert run(aa, "--out", out) == 0
    assert run(fake, "--out", out) == 0  # "zz-fake" sorts last by name, yet it was the benchmark just run
    assert _sections((out / "LEADERBOARD.md").read_text())[0].startswith("## zz-fake")
    assert main(["leaderboard", str(out), "--format", "latex,html", "--no-plots", "--first", "aa-fake"]) == 0
    text = (out / "LEADERBOARD.md").read_text()
    assert [s.split()[1] for s in _sections(text)] == ["aa-fake", "zz-fake"]
    html = (out / "leaderboard.html").read_text()
    assert html.index("<h2>aa-fake") < html.index("<h2>zz-fake")
    latex = (out / "leaderboard.tex").read_text()
    assert latex.index("\\caption{aa-fake") < latex.index("\\caption{zz-fake")
    scale = "Scale: 3-way 1-shot, 2 queries per class; 4 meta-steps × 2 tasks; backbone fake-mlp (hidden=8); 12 "
    scale += "evaluation tasks."
    assert scale in text and scale in html and scale in latex
    assert "Scale: 3-way 1-shot, 2 queries per class; 2 meta-steps × 2 tasks; backbone fake-mlp (hidden=8)" in text
    capsys.readouterr()
    assert main(["leaderboard", str(out), "--no-plots", "--first", "omniglot"]) == 2
    assert capsys.readouterr().err == (
        "error: --first omniglot: no such benchmark in the records; benchmarks: aa-fake, zz-fake\n"
    )


def test_set_runs_are_labelled_by_their_overrides_outside_their_identity_and_differing_scale_is_named(tmp_path, fakes):
    out = tmp_path / "out"
    path = write_benchmark(tmp_path / "fake.toml", "fake", {"grid.strategies": ["query"]})
    assert run(path, "--out", out) == 0
    assert run(path, "--out", out, "--set", "training.meta_steps=2", "--set", "grid.seeds=[1]") == 0
    changed = write_benchmark(tmp_path / "same.toml", "fake", {"grid.strategies": ["query"], "training.meta_steps": 2})
    records = {r["config"]["seed"]: r for _, r in results.read_records(out)}
    assert records[1]["overrides"] == ["training.meta_steps=2"]  # grid keys choose runs: not a label
    assert records[0]["overrides"] == []
    (same,) = [s for s in load_benchmark(changed, fakes) if s.seed == 0]
    assert same.config_hash != records[0]["config_hash"]  # sanity: the override changes the config ...
    (by_set,) = load_benchmark(path, fakes, overrides=["training.meta_steps=2"])
    assert by_set.overrides and by_set.config_hash == same.config_hash  # ... but not through the --set label
    sections = _sections((out / "LEADERBOARD.md").read_text())
    assert sections == ["## fake", "## fake (--set training.meta_steps=2)"]
    # a record from before overrides were recorded reads as none; one table of two scales names what differs
    del records[1]["overrides"]
    frame = runs_frame([records[0], records[1]])
    assert list(frame["overrides"]) == ["", ""]
    assert scale_text(frame) == (
        "Scale: 3-way 1-shot, 2 queries per class; backbone fake-mlp (hidden=8); 12 evaluation tasks; "
        "differing between rows: training.meta_steps."
    )
