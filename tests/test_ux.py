"""What a researcher reaches for daily, through the CLI: ``--set`` overrides, ``show RUN``, LaTeX and HTML tables."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from benchmark_files import FAKE_GRID, run, write_benchmark

from metabench import results
from metabench.cli import main
from metabench.config import load_benchmark
from metabench.errors import ConfigError
from metabench.registry import Registry, default_registry

SET = ["--set", "training.meta_steps=3"]


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny sinusoid benchmark run once through the CLI with an override: (benchmark file, results folder)."""
    tmp = tmp_path_factory.mktemp("ux")
    path, out = write_benchmark(tmp / "tiny.toml", "sine"), tmp / "results"
    assert run(path, "--out", out, *SET) == 0
    return path, out


# --set -------------------------------------------------------------------------------------------------------------


def load(tmp_path: Path, registry: Registry, *overrides: str, profile: str | None = None):
    path = tmp_path / "bench.toml"
    path.write_text(FAKE_GRID)
    return load_benchmark(path, registry, profile=profile, overrides=overrides)


def set_error(tmp_path: Path, registry: Registry, *overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, registry, *overrides)
    return str(info.value)


def test_overrides_apply_after_the_profile_and_parse_toml_values(tmp_path, fake_registry):
    specs = load(tmp_path, fake_registry, "training.meta_steps=9", "grid.seeds=[4, 5]", profile="quick")
    assert {s.training.meta_steps for s in specs} == {9}  # the profile says 5: --set comes after it
    assert sorted({s.seed for s in specs}) == [4, 5]
    specs = load(tmp_path, fake_registry, 'grid.learners=["fake-learner"]', "grid.strategies=['query']")
    assert {s.label.rsplit("/", 1)[0] for s in specs} == {"standard/fake-learner/query"}
    # backbone.name: a bare word is a string
    specs = load(tmp_path, fake_registry, "protocol.n_way=4", "training.meta_lr=0.5", "backbone.name=fake-mlp")
    assert {(s.protocol.n_way, s.training.meta_lr, s.backbone.name) for s in specs} == {(4, 0.5, "fake-mlp")}
    specs = load(tmp_path, fake_registry, "params.learner.fake-learner.nan_at=2")  # a shared-params key
    assert {s.learner.params["nan_at"] for s in specs} == {2}


def test_override_errors_name_the_set_argument(tmp_path, fake_registry):
    message = set_error(tmp_path, fake_registry, "training.meta_steps=abc")
    assert message.startswith("--set training.meta_steps=abc: ") and "expected int, got str" in message
    message = set_error(tmp_path, fake_registry, "training.meta_steps=-3")
    assert message.startswith("--set training.meta_steps=-3: ") and ">= 0" in message
    message = set_error(tmp_path, fake_registry, "training.metasteps=3")
    assert "--set training.metasteps=3: unknown key" in message and "did you mean 'meta_steps'" in message
    message = set_error(tmp_path, fake_registry, "trainig.meta_steps=3")
    assert "--set trainig.meta_steps=3: unknown key 'trainig'" in message and "did you mean 'training'" in message
    message = set_error(tmp_path, fake_registry, 'grid.learners=["fake-learner", "fake-lerner"]')
    assert message.startswith('--set grid.learners=["fake-learner", "fake-lerner"] (grid.learners[1]): ')
    assert "unknown learner 'fake-lerner'" in message
    assert "not valid TOML" in set_error(tmp_path, fake_registry, "grid.seeds=[1,")
    assert "expected a dotted KEY=VALUE" in set_error(tmp_path, fake_registry, "training.meta_steps")
    assert "dataset.name is not a table" in set_error(tmp_path, fake_registry, "dataset.name.x=1")


def test_an_override_is_part_of_the_record_and_its_identity(ran):
    path, out = ran
    records = results.load_records(out)
    assert len(records) == 4 and {r["config"]["training"]["meta_steps"] for r in records} == {3}
    plain = {s.config_hash for s in load_benchmark(path, default_registry())}
    overridden = {s.config_hash for s in load_benchmark(path, default_registry(), overrides=SET[1:])}
    assert {r["config_hash"] for r in records} == overridden and not overridden & plain


def test_a_bad_override_on_the_command_line_exits_2_naming_it(tmp_path, capsys):
    bench = write_benchmark(tmp_path / "tiny.toml", "sine")
    code = main(["run", str(bench), "--out", str(tmp_path / "r"), "--set", "grid.learners=['mamll']"])
    error = capsys.readouterr().err
    assert code == 2 and "--set grid.learners=['mamll'] (grid.learners[0]): unknown learner 'mamll'" in error
    assert "Traceback" not in error and not (tmp_path / "r").exists()


# show ---------------------------------------------------------------------------------------------------------------


def test_show_finds_a_run_by_hash_prefix_and_writes_its_plot(ran, capsys):
    _, out = ran
    record = next(r for r in results.load_records(out) if r["label"] == "standard/maml/query/seed=0")
    (out / "plots" / f"{record['config_hash']}.png").unlink(missing_ok=True)
    assert main(["show", record["config_hash"][:6], "--results", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"run {record['config_hash']}  tiny-sine  standard/maml/query/seed=0  [ok]")
    assert json.dumps(record["config"], indent=2) in text  # the resolved config, override included
    assert record["environment"]["versions"]["torch"] in text and "provenance:" in text
    test = record["metrics"]["test"]
    assert re.search(rf"test\s+{test['mean']:.4f}\s+{test['ci95']:.4f}", text)
    assert f"cell (this config, seeds 0): test mean {test['mean']:.4f} no CI with one seed" in text
    assert "grad_norm_support" in text
    plot = out / "plots" / f"{record['config_hash']}.png"
    assert f"curve plot: {plot}" in text and plot.stat().st_size > 0


def test_show_finds_a_run_by_label_and_lists_ambiguous_matches(ran, capsys):
    _, out = ran
    assert main(["show", "*/anil/metamix/*", "--results", str(out)]) == 0
    assert "standard/anil/metamix/seed=0  [ok]" in capsys.readouterr().out
    assert main(["show", "maml", "--results", str(out)]) == 2
    error = capsys.readouterr().err
    assert "2 runs match" in error and "standard/maml/query/seed=0" in error and "standard/maml/metamix/seed=0" in error
    assert main(["show", "nothing-like-it", "--results", str(out)]) == 2
    assert "no run in" in capsys.readouterr().err


# tables -------------------------------------------------------------------------------------------------------------


def test_leaderboard_latex_is_balanced_booktabs_with_one_row_per_cell(ran, capsys):
    _, out = ran
    assert main(["leaderboard", str(out), "--format", "latex"]) == 0
    assert str(out / "leaderboard.tex") in capsys.readouterr().out
    tex = (out / "leaderboard.tex").read_text()
    body = "\n".join(line for line in tex.splitlines() if not line.startswith("%"))
    assert body.count("{") == body.count("}") and body.count("$") % 2 == 0
    for env in ("table", "tabular"):
        assert body.count(f"\\begin{{{env}}}") == body.count(f"\\end{{{env}}}") == 1
    assert all(rule in body for rule in ("\\toprule", "\\midrule", "\\bottomrule"))
    rows = [line for line in body.split("\\midrule", 1)[1].splitlines() if line.endswith("\\\\")]
    assert len(rows) == 4 and all(row.count("&") == 6 for row in rows)
    cells = {tuple(c.strip() for c in row.split("&")[:3]) for row in rows}
    assert cells == {("standard", learner, s) for learner in ("maml", "anil") for s in ("query", "metamix")}
    # mse: lower is better; the bold score is the lowest of the table
    means = {row: float(re.search(r"([\d.]+)", row.split("&")[3]).group(1)) for row in rows}
    bold = [row for row in rows if "\\textbf{" in row]
    assert len(bold) == 1 and means[bold[0]] == min(means.values())


def test_leaderboard_html_is_one_self_contained_page(ran, capsys):
    _, out = ran
    assert main(["leaderboard", str(out), "--format", "md,html"]) == 0
    page = (out / "leaderboard.html").read_text()
    assert page.count("<tr>") == 1 + 4 and page.count('src="data:image/png;base64,') == 4 + 1  # curves + overview
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing to fetch: readable offline
    assert main(["leaderboard", str(out), "--format", "pdf"]) == 2
    assert "unknown format 'pdf'; allowed: md, latex, html" in capsys.readouterr().err


CHROMIUM = shutil.which("chromium") or shutil.which("chromium", path="/usr/bin")


# CI installs Debian's chromium (.ci/run): there a missing browser fails the test instead of skipping it
@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="headless Chromium not installed (Debian: chromium)"
)
def test_leaderboard_html_renders_in_headless_chromium_with_every_image_decoded(ran, tmp_path):
    assert CHROMIUM, "headless Chromium not installed (Debian: chromium)"
    _, out = ran
    main(["leaderboard", str(out), "--format", "html"])
    # a copy whose script writes, once loaded, how many images decoded and the leaderboard chart's rendered size
    probe = tmp_path / "probe.html"
    script = (
        "<script>addEventListener('load',()=>{const i=[...document.images];"
        "const c=document.querySelector('img[alt=\"leaderboard.png\"]').getBoundingClientRect();"
        "document.title='decoded '+i.filter(x=>x.naturalWidth>0).length+'/'+i.length"
        "+' chart '+Math.round(c.width)+'x'+Math.round(c.height)})</script>"
    )
    probe.write_text((out / "leaderboard.html").read_text().replace("</body>", script + "</body>"))
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    command += ["--no-first-run", "--virtual-time-budget=5000"]
    dom = subprocess.run([*command, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    title = re.search(r"<title>decoded (\d+)/(\d+) chart (\d+)x(\d+)</title>", dom)
    assert title and title[1] == title[2] == "5", dom[:300]
    assert int(title[3]) >= 400 and int(title[4]) >= 200  # the chart is laid out at a readable size
    shot = tmp_path / "page.png"
    subprocess.run([*command, f"--screenshot={shot}", "--window-size=1100,1400", probe.as_uri()], timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_latex_bolds_the_best_shows_verdicts_marks_stale_rows_and_escapes_labels():
    import numpy as np
    import pandas as pd

    from metabench.tables import render_latex

    def cell(sampler, strategy, mean, delta=np.nan, verdict="", stale=""):
        low, high = (delta - 0.02, delta + 0.02) if verdict else (np.nan, np.nan)
        return dict(benchmark="b", profile="quick", overrides="", scale="", sampler=sampler, learner="maml",
                    strategy=strategy, variant="",
                    mean=mean, ci95=0.01, seeds=3, delta=delta, delta_ci_low=low, delta_ci_high=high,
                    p_value=np.nan, p_holm=np.nan, alpha=0.05, verdict=verdict, not_tested="", margin=1.0,
                    paired_seeds=3, mde=0.05,
                    looks=1, stale=stale, metric="accuracy", goal="maximize",
                    rank=mean, plot_hash=None)  # fmt: skip

    cells = pd.DataFrame(
        [
            cell("standard", "query", 0.5),
            cell("standard", "meta_mix", 0.6, 0.1, "better"),
            cell("nme", "query", 0.7),
            cell("nme", "cob", 0.65, -0.05, "worse", stale="host code changed"),
            cell("nme", "mixup-ss", 0.69, -0.01, "undecided"),
        ]
    )
    cells["rank"] = cells["mean"].rank(ascending=False, method="min")
    text = render_latex(cells)
    rows = [line for line in text.splitlines() if line.endswith("\\\\")][1:]
    assert len(rows) == 5 and sum("\\textbf{" in row for row in rows) == 1  # one best per table, as in Markdown
    row = {tuple(c.strip() for c in line.split("&")[:3:2]): line for line in rows}  # (sampler, strategy)
    assert "\\textbf{70.00 $\\pm$ 1.00}" in row["nme", "query"]
    assert "+10.00 [+8.00, +12.00] & better" in row["standard", "meta\\_mix"]
    assert "-5.00 [-7.00, -3.00] & worse" in row["nme", "cob$^\\dagger$"]  # stale
    assert "& undecided &" in row["nme", "mixup-ss"]
    assert "Holm" in text and "recorded by other code" in text
