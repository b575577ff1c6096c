"""Results you can trust, through the CLI as a user meets them: the plan and stale records, one leaderboard row per
config, finite-or-failed runs, safe checkpoints and plots, preflight errors, no tracebacks for user errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from benchmark_files import benchmark_toml, metabench_process, run, write_benchmark
from plugin_packages import installed, write_plugin_package

from metabench import config, results
from metabench.cli import main


def strict_json(path: Path) -> dict:
    def reject(name: str) -> None:
        raise AssertionError(f"{path} holds {name}")

    return json.loads(path.read_text(), parse_constant=reject)


# ------------------------------------------------------------------------------------------------ plan, stale, rerun
def test_plan_line_dry_run_statuses_and_rerun(fakes, tmp_path, capsys):
    good = {"name": "fake-learner", "label": "good"}
    bad = {"name": "fake-learner", "label": "bad", "params": {"fail_at": 2}}
    bench = write_benchmark(tmp_path / "b.toml", "fake", {"grid.learners": [good, bad]})
    out = tmp_path / "out"
    assert run(bench, "--out", out, "--dry-run") == 0
    dry = capsys.readouterr().out
    assert dry.count("to run") >= 4 and "4 runs: 4 to run" in dry
    assert not out.exists()  # a dry run writes nothing

    assert run(bench, "--out", out) == 1
    captured = capsys.readouterr()
    assert "4 runs: 4 to run" in captured.out
    assert "2 failed runs:" in captured.err and "standard/bad/query/seed=0: RuntimeError" in captured.err
    assert "--retry-failed" in captured.err

    # a record whose code differs from the installed code is stale
    path = out / "runs" / f"{config.load_benchmark(bench, fakes)[0].config_hash}.json"
    record = strict_json(path)
    record["code_hash"] = "other-code"
    path.write_text(json.dumps(record))
    assert run(bench, "--out", out, "--dry-run") == 0
    rows = {tuple(line.split()[:3]) for line in capsys.readouterr().out.splitlines()}
    assert {("standard/good/query", "0", "stale"), ("standard/good/support", "0", "recorded")} <= rows
    assert {("standard/bad/query", "0", "failed"), ("standard/bad/support", "0", "failed")} <= rows

    assert run(bench, "--out", out, "--reuse-stale") == 1
    captured = capsys.readouterr()
    assert (
        "1 recorded with the same config and code, 1 stale" in captured.out and "kept by --reuse-stale" in captured.out
    )
    assert "2 failed (kept; --retry-failed runs them again), 0 to run" in captured.out
    board = (out / "LEADERBOARD.md").read_text()
    assert "stale" in board.split("### Analyses")[0] and "Stale rows" in board

    assert run(bench, "--out", out) == 1
    assert "1 stale (same config, different code: to run again)" in capsys.readouterr().out
    assert strict_json(path)["code_hash"] != "other-code"
    assert "Stale rows" not in (out / "LEADERBOARD.md").read_text()

    before = {p.name: strict_json(p)["started_at"] + str(p.stat().st_mtime_ns) for p in (out / "runs").glob("*.json")}
    assert run(bench, "--out", out, "--only", "good", "--rerun") == 0
    assert "2 runs: all to run again (--rerun)" in capsys.readouterr().out
    after = {p.name: strict_json(p)["started_at"] + str(p.stat().st_mtime_ns) for p in (out / "runs").glob("*.json")}
    assert sum(before[name] != after[name] for name in before) == 2

    assert run(bench, "--out", out, "--only", "good") == 0
    assert "all recorded with the same config and code; nothing to run (--rerun" in capsys.readouterr().out


NOISY_PLUGIN = """
    import torch
    from metabench import MixPlan, OuterBatch, hookimpl

    NOISE = {noise}


    class NoisyQuery:
        '''Outer loss on the query set with input noise (a throwaway strategy whose code changes between versions).'''

        plain = False

        def plan(self, rng, tasks, n_layers):
            return MixPlan(0, {{"noise": torch.randn(tasks.query_x.shape, generator=rng).to(tasks.device) * NOISE}})

        def apply(self, plan, encode, support_x, support_t, query_x, query_t):
            return OuterBatch(query_x + plan.tensors["noise"], query_t, 0)

        def refine(self, plan, heldout_loss):
            return plan


    @hookimpl
    def metabench_register_strategies(register):
        register("noisy-query", NoisyQuery, summary="Query set with Gaussian input noise.")
"""


def _plugin(root: Path, version: str, noise: float) -> Path:
    body = NOISY_PLUGIN.format(noise=noise)
    return write_plugin_package(root / version, "metabench-noisy", "metabench_noisy", body, version=version)


def test_a_new_plugin_version_makes_its_records_stale_and_they_are_rerun(tmp_path):
    bench = write_benchmark(tmp_path / "b.toml", "omniglot", {"grid.strategies": ["query", "noisy-query"]})
    out = tmp_path / "out"
    flags = ["--out", out, "--device", "cpu", "--no-progress"]
    with installed(tmp_path, _plugin(tmp_path, "0.1.0", 0.1)):
        first = metabench_process("run", bench, *flags)
        assert first.returncode == 0, first.stderr
        assert "2 runs: 2 to run" in first.stdout
        records = {r["config"]["strategy"]["name"]: r for r in results.load_records(out)}
        noisy = records["noisy-query"]["provenance"]["components"]["strategy"]
        assert noisy["distribution"] == "metabench-noisy" and noisy["version"] == "0.1.0" and noisy["fingerprint"]
        builtin = records["query"]["provenance"]["components"]["learner"]
        assert builtin["name"] == "protonet" and builtin["distribution"] == "metabench"
        assert (
            records["query"]["provenance"]["libraries"]["torch"]
            and records["query"]["provenance"]["device_type"] == "cpu"
        )

    with installed(tmp_path, _plugin(tmp_path, "0.2.0", 1.0)):  # the upgrade
        kept = metabench_process("run", bench, *flags, "--reuse-stale")
        assert kept.returncode == 0, kept.stderr
        assert "1 recorded with the same config and code, 1 stale" in kept.stdout and "0 to run" in kept.stdout
        board = (out / "LEADERBOARD.md").read_text()
        assert "metabench-noisy 0.1.0 -> metabench-noisy 0.2.0" in board

        second = metabench_process("run", bench, *flags)
        assert second.returncode == 0, second.stderr
        assert "1 stale (same config, different code: to run again), 1 to run" in second.stdout
        records = {r["config"]["strategy"]["name"]: r for r in results.load_records(out)}
        assert records["noisy-query"]["provenance"]["components"]["strategy"]["version"] == "0.2.0"
        assert "Stale rows" not in (out / "LEADERBOARD.md").read_text()


# ------------------------------------------------------------------------------------------- leaderboard cells
def test_changed_configs_are_rows_apart_with_the_keys_that_differ(fakes, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(write_benchmark(tmp_path / "a.toml", "fake"), "--out", out) == 0
    assert run(write_benchmark(tmp_path / "b.toml", "fake", {"training.meta_steps": 6}), "--out", out) == 0
    assert run(write_benchmark(tmp_path / "c.toml", "fake", {"protocol.eval_tasks": 6}), "--out", out) == 0
    assert main(["leaderboard", str(out)]) == 0
    csv = pd.read_csv(out / "leaderboard.csv")
    assert len(csv) == 6 and set(csv["seeds"]) == {1}  # never two configs averaged into one row
    query = csv[csv["strategy"] == "query"]
    assert set(query["variant"]) == {
        "protocol.eval_tasks=12, training.meta_steps=4",
        "protocol.eval_tasks=12, training.meta_steps=6",
        "protocol.eval_tasks=6, training.meta_steps=4",
    }
    # the fake "support" strategy is compared with the plain one of its own config, on the same tasks
    support = csv[csv["strategy"] == "support"]
    assert set(support["baseline"]) == {"query"} and support["delta"].notna().all()
    assert "training.meta_steps=6" in (out / "LEADERBOARD.md").read_text()


def test_unreadable_or_other_schema_records_are_skipped_with_a_warning(fakes, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(write_benchmark(tmp_path / "a.toml", "fake"), "--out", out) == 0
    good = sorted((out / "runs").glob("*.json"))
    truncated = out / "runs" / "truncated.json"
    truncated.write_text(good[0].read_text()[:200])
    old = out / "runs" / "old.json"
    old.write_text(json.dumps({**strict_json(good[1]), "schema": 1}))
    capsys.readouterr()
    assert main(["leaderboard", str(out)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"skipped {truncated}: not a valid record" in err and f"skipped {old}: record schema 1" in err
    assert len(pd.read_csv(out / "leaderboard.csv")) == 2


# ------------------------------------------------------------------------------------------- finite or failed
def test_a_nan_evaluation_fails_the_run_naming_the_metric_and_records_stay_strict_json(fakes, tmp_path, capsys):
    out = tmp_path / "out"
    nan_eval = {"name": "fake-learner", "params": {"nan_eval": True}}
    bench = write_benchmark(tmp_path / "a.toml", "fake", {"grid.learners": [nan_eval]})
    assert run(bench, "--out", out) == 1
    records = [strict_json(p) for p in (out / "runs").glob("*.json")]
    assert [r["status"] for r in records] == ["failed", "failed"]
    assert all("NonFinite: metrics.test.mean" in r["error"] for r in records)
    err = capsys.readouterr().err
    assert "2 failed runs" in err and "--retry-failed" in err
    assert main(["leaderboard", str(out)]) == 0
    assert run(bench, "--out", out) == 1  # the next run on that folder works and says how to retry
    assert "2 failed (kept; --retry-failed runs them again)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ("[params.learner.maml]\ninner_lr = nan\n", "inner_lr' = nan: must be a finite number"),
        ("[params.learner.maml]\ninner_lr = inf\n", "inner_lr' = inf: must be a finite number"),
    ],
)
def test_non_finite_parameters_are_config_errors(tmp_path, capsys, table, expected):
    bench = tmp_path / "b.toml"
    bench.write_text(benchmark_toml("omniglot", {"grid.learners": ["maml"]}) + table)
    assert run(bench, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert expected in err and "params.learner.maml" in err and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ safe files
class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_payload_in_a_checkpoint_does_not_run(fakes, tmp_path, capsys):
    bench = write_benchmark(tmp_path / "a.toml", "fake")
    out = tmp_path / "out"
    marker = tmp_path / "payload-ran"
    spec = config.load_benchmark(bench, fakes)[0]
    crafted = results.checkpoint_path(out / "checkpoints", spec)
    crafted.parent.mkdir(parents=True)
    torch.save({"state": _Payload(marker)}, crafted)
    assert run(bench, "--out", out, "--only", "query") == 0
    assert not marker.exists()
    assert f"ignored checkpoint {crafted}" in capsys.readouterr().err
    assert results.load_record(out, spec)["status"] == "ok"
    # the file was a real payload: the unsafe loader would have run it
    torch.save({"state": _Payload(marker)}, crafted)
    torch.load(crafted, weights_only=False)
    assert marker.exists()


def test_plots_are_redrawn_when_empty_or_older_than_their_record(fakes, tmp_path):
    out = tmp_path / "out"
    assert run(write_benchmark(tmp_path / "a.toml", "fake"), "--out", out) == 0
    plots = sorted((out / "plots").glob("*.png"))
    assert len(plots) == 2 and all(p.stat().st_size > 0 for p in plots)
    plots[0].write_bytes(b"")  # what a kill during the write used to leave
    record = out / "runs" / plots[1].name.replace(".png", ".json")
    os.utime(plots[1], ns=(record.stat().st_mtime_ns - 10**9,) * 2)
    stamp = plots[1].stat().st_mtime_ns
    assert main(["leaderboard", str(out)]) == 0
    assert plots[0].stat().st_size > 0 and plots[1].stat().st_mtime_ns > stamp
    assert not list((out / "plots").glob(".*.tmp"))


# ---------------------------------------------------------------------------------------------------- preflight
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"n_way = 3": "n_way = 300"}, "[protocol] n_way = 300, k_shot = 1, k_query = 1: sampler 'standard'"),
        ({"k_query = 1": "k_query = 30"}, "k_shot + k_query = 1 + 30 = 31 exceeds the 20 examples"),
        (
            {'["query"]': '[{name="metamix", params={layers=[9]}}]'},
            "strategy parameter 'layers' = [9]: layer(s) [9] do not exist; this backbone's mixable layers are 0..2",
        ),
        (
            {'name = "omniglot"': 'name = "omniglot-lake20"'},
            "protocol n_way = 3, k_shot = 1: dataset 'omniglot-lake20' evaluates its test split on its own fixed "
            "tasks, 20-way 1-shot",
        ),
        (
            {'name = "omniglot"': 'name = "image-folder"\nparams = { root = "/nonexistent/images" }'},
            "root = '/nonexistent/images' is not an existing folder",
        ),
        (
            {
                'name = "omniglot"': 'name = "sinusoid"\nparams = { amplitude_low = 5.0, amplitude_high = 1.0 }',
                'name = "conv4"\nparams = { filters = 4, blocks = 2 }': 'name = "mlp"',
            },
            "amplitude_low = 5.0 exceeds amplitude_high = 1.0",
        ),
    ],
)
def test_preflight_reports_knowable_errors_before_any_run(tmp_path, capsys, change, expected):
    text = benchmark_toml("omniglot", {"grid.learners": ["maml"]})
    for old, new in change.items():
        assert old in text
        text = text.replace(old, new)
    bench = tmp_path / "b.toml"
    bench.write_text(text)
    out = tmp_path / "out"
    assert run(bench, "--out", out) == 2
    err = capsys.readouterr().err
    assert "preflight found 1 problem before any run (nothing was run or written)" in err, err
    assert f"{bench}: " in err and expected in err and "standard/maml/" in err and "Traceback" not in err
    assert not out.exists()


def test_a_non_writable_out_is_an_error_before_any_run(fakes, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert run(write_benchmark(tmp_path / "a.toml", "fake"), "--out", blocker / "results") == 2
    assert f"--out {blocker / 'results'}: {blocker} is not a folder" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ no tracebacks, pipes
@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda tmp: tmp, "is a folder; give a benchmark TOML file"),
        (lambda tmp: (tmp / "p.toml", (tmp / "p.toml").write_text('params = "abc"\n'))[0], "params: expected a table"),
        (lambda tmp: (tmp / "b.toml", (tmp / "b.toml").write_bytes(b"\xff\xfe\x00"))[0], "not a text file"),
    ],
)
def test_user_errors_print_no_traceback(tmp_path, capsys, make, expected):
    assert run(make(tmp_path)) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_output_into_a_closed_pipe_is_not_an_error(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "metabench.cli", "plugins"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    process.stdout.close()  # the reader is gone before metabench writes, as with `| head` on long output
    err = process.stderr.read().decode()
    assert process.wait() != 0
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err


def test_a_run_killed_with_sigkill_resumes_from_its_checkpoint(tmp_path):
    steps = {"training.meta_steps": 150, "training.validate_every": 50, "training.checkpoint_every": 5}
    bench = write_benchmark(tmp_path / "b.toml", "omniglot", steps)
    flags = ["--device", "cpu", "--no-progress"]
    reference = metabench_process("run", bench, "--out", tmp_path / "reference", *flags)
    assert reference.returncode == 0, reference.stderr

    out = tmp_path / "out"
    command = [sys.executable, "-m", "metabench.cli", "run", str(bench), "--out", str(out), *flags]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((out / "checkpoints").glob("*.pt")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not list((out / "runs").glob("*.json")), "the run finished before it could be killed"

    resumed = metabench_process("run", bench, "--out", out, *flags)
    assert resumed.returncode == 0, resumed.stderr
    [record] = results.load_records(out)
    [expected] = results.load_records(tmp_path / "reference")
    assert record["resumed_from"] and record["resumed_from"] % 5 == 0
    assert record["metrics"]["test"]["per_task"] == expected["metrics"]["test"]["per_task"]
    assert record["curves"] == expected["curves"]
