"""Run identity by behaviour, through the CLI: what makes a record stale (code that can change its numbers, by
meaning, not bytes) and ``metabench verify``, which replays a stale record's first meta-steps and re-stamps it when
they are bit-identical.

The learner under test is a throwaway plugin on ``PYTHONPATH`` with a hand-written ``.dist-info`` (its entry point),
so that each CLI call in a fresh interpreter sees the files as edited, with no pip install."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from benchmark_files import metabench_process, write_benchmark

from metabench import config, probe, provenance, results, runner
from metabench.registry import default_registry

LEARNER = """
    '''MAML with its own inner step size: the component whose code the tests edit.'''

    from metabench.plugins.learners.gradient import GradientLearner

    INNER_LR = 0.4


    def wrapped():
        '''MAML, one inner step.'''
        options = dict(eval_inner_steps=None, first_order=False, vectorize="auto")
        return GradientLearner(inner_steps=1, inner_lr=INNER_LR, **options)
"""

OTHER = """
    from metabench import OuterBatch


    class QueryAgain:
        '''A strategy no test grid uses.'''

        plain = True

        def plan(self, rng, tasks, n_layers):
            return None

        def apply(self, plan, encode, support_x, support_t, query_x, query_t):
            return OuterBatch(query_x, query_t, 0)

        def refine(self, plan, heldout_loss):
            return plan
"""

INIT = """
    from metabench import hookimpl
    from wrapped_learner import learner, other


    @hookimpl
    def metabench_register_learners(register):
        register("wrapped-maml", learner.wrapped, summary="MAML, wrapped.")


    @hookimpl
    def metabench_register_strategies(register):
        register("query-again", other.QueryAgain, summary="Query set, again.")
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder of the ``wrapped_learner`` package (on ``PYTHONPATH`` of every CLI process)."""
    root = tmp_path / "site"
    package = root / "wrapped_learner"
    (package / "data").mkdir(parents=True)
    for name, body in {"__init__.py": INIT, "learner.py": LEARNER, "other.py": OTHER}.items():
        (package / name).write_text(textwrap.dedent(body))
    (package / "data" / "table.txt").write_text("1 2 3\n")
    info = root / "metabench_wrapped-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: metabench-wrapped\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[metabench]\nwrapped_learner = wrapped_learner\n")
    monkeypatch.setenv("PYTHONPATH", str(root))
    return package


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def cli(*args: str | Path, code: int = 0) -> str:
    """The output of ``metabench ARGS`` in a fresh interpreter, which must exit with ``code``."""
    done = metabench_process(*args)
    assert done.returncode == code and "Traceback" not in done.stderr, done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.fixture
def recorded(tmp_path: Path, plugin: Path) -> tuple[Path, Path]:
    """A benchmark file and its results folder with two recorded runs: ``wrapped-maml`` and ``anil``."""
    bench = write_benchmark(
        tmp_path / "b.toml", "sine", {"grid.learners": ["wrapped-maml", "anil"], "grid.strategies": ["query"]}
    )
    out = tmp_path / "out"
    assert "2 runs: 2 to run" in cli("run", bench, "--out", out, "--device", "cpu", "--no-progress")
    return bench, out


def dry_run(bench: Path, out: Path) -> str:
    return cli("run", bench, "--out", out, "--device", "cpu", "--dry-run")


def test_edits_that_cannot_change_a_number_leave_every_record_fresh(recorded, plugin):
    bench, out = recorded
    record = next(r for r in results.load_records(out) if r["config"]["learner"]["name"] == "wrapped-maml")
    learner = record["provenance"]["components"]["learner"]
    assert "wrapped_learner.learner" in learner["modules"] and "wrapped_learner.other" not in learner["modules"]
    assert learner["data"] == {"data/table.txt": provenance.file_digest(plugin / "data" / "table.txt")}
    host = record["provenance"]["host"]
    assert {"metabench.runner", "metabench.cache", "metabench.seeds", "metabench.evaluation"} <= set(host)
    assert not set(host) & provenance.READERS
    assert record["probe"]["steps"] == 4 and len(record["probe"]["params"]) == 4 and record["probe"]["scores"]

    edit(
        plugin / "learner.py",
        "INNER_LR = 0.4\n",
        "# the step size of MAML's Omniglot setting\n\nINNER_LR = 0.4  # ok\n",
    )
    edit(plugin / "learner.py", "'''MAML, one inner step.'''", "'''MAML with one inner step (docs only).'''")
    edit(plugin / "other.py", "return OuterBatch(query_x, query_t, 0)", "return OuterBatch(query_x * 2, query_t, 0)")
    (plugin / ".#learner.py").symlink_to(plugin / "no-such-file")  # an editor's lock file: a dangling link
    (plugin / "NOTES.md").write_text("what I tried\n")
    (plugin / "data" / ".#table.txt").symlink_to(plugin / "data" / "gone")
    text = dry_run(bench, out)
    assert "2 runs: all recorded with the same config and code; nothing to run" in text, text
    assert "leaderboard" in cli("leaderboard", out)

    edit(plugin / "data" / "table.txt", "1 2 3", "1 2 4")
    text = dry_run(bench, out)
    assert "1 recorded with the same config and code, 1 stale" in text, text
    assert "learner wrapped-maml: data file data/table.txt changed" in text


def test_a_changed_default_stays_stale_under_verify_and_a_refactor_is_verified(recorded, plugin):
    bench, out = recorded
    edit(plugin / "learner.py", "INNER_LR = 0.4", "INNER_LR = 0.3")
    text = dry_run(bench, out)
    assert "1 recorded with the same config and code, 1 stale" in text, text
    assert "learner wrapped-maml: module wrapped_learner.learner changed" in text
    text = cli("verify", out, code=1)
    assert "wrapped-maml/query/seed=0: stale: first diverging step 1" in text, text
    assert "2 records: 1 fresh, 0 verified by replay, 1 still stale (first diverging step 1), 0 without probe" in text

    # the same numbers by other code: stale until verified, then fresh
    edit(plugin / "learner.py", "INNER_LR = 0.3", "INNER_LR = 0.4")
    edit(plugin / "learner.py", "inner_lr=INNER_LR", "inner_lr=step_size()")
    (plugin / "learner.py").write_text(
        (plugin / "learner.py").read_text() + "\n\ndef step_size():\n    return INNER_LR\n"
    )
    assert "1 stale" in dry_run(bench, out)
    text = cli("verify", out, "--steps", "3")
    assert "wrapped-maml/query/seed=0: verified: verified by replay of 3 steps" in text, text
    assert "1 verified by replay, 0 still stale" in text
    text = dry_run(bench, out)
    assert "2 runs: all recorded with the same config and code (1 verified by replay); nothing" in text, text
    assert "verified by replay of 3 steps" in text
    record = next(r for r in results.load_records(out) if r["config"]["learner"]["name"] == "wrapped-maml")
    assert record["verified"]["steps"] == 3 and record["verified"]["code_hash"] != record["code_hash"]
    cli("leaderboard", out)
    assert "Stale rows" not in (out / "LEADERBOARD.md").read_text()

    # a second verification under yet other code keeps the first in the history
    (plugin / "learner.py").write_text((plugin / "learner.py").read_text() + "\n\ndef unused():\n    return 1\n")
    assert "1 verified by replay" in cli("verify", out)
    record = next(r for r in results.load_records(out) if r["config"]["learner"]["name"] == "wrapped-maml")
    assert record["verified"]["steps"] == 4 and len(record["history"]) == 1
    assert json.dumps(record["provenance"]) != json.dumps(record["verified"]["provenance"])


def test_verify_replays_a_cpu_record_under_its_own_thread_count(tmp_path, plugin):
    # a learner whose numbers depend on torch's thread count, as the last bits of a CPU convolution do
    edit(plugin / "learner.py", "inner_lr=INNER_LR", "inner_lr=INNER_LR + 0.01 * torch.get_num_threads()")
    edit(plugin / "learner.py", "from metabench", "import torch\n\nfrom metabench")
    bench = write_benchmark(
        tmp_path / "b.toml", "sine", {"grid.learners": ["wrapped-maml"], "grid.strategies": ["query"]}
    )
    out = tmp_path / "out"
    cli("run", bench, "--out", out, "--device", "cpu", "--no-progress", "--threads", "3")
    (record,) = results.load_records(out)
    assert record["environment"]["threads"] == 3

    edit(plugin / "learner.py", "INNER_LR = 0.4", "INNER_LR = 0.2 + 0.2")  # other code, the same numbers
    assert "1 stale" in dry_run(bench, out)
    text = cli("verify", out)
    assert "wrapped-maml/query/seed=0: verified: verified by replay of 4 steps" in text, text


def test_verify_replays_a_cpu_record_only_where_the_kernels_use_its_instruction_set(tmp_path, plugin):
    bench = write_benchmark(
        tmp_path / "b.toml", "sine", {"grid.learners": ["wrapped-maml"], "grid.strategies": ["query"]}
    )
    out = tmp_path / "out"
    cli("run", bench, "--out", out, "--device", "cpu", "--no-progress")
    path = next((out / "runs").glob("*.json"))
    record = json.loads(path.read_text())
    here = record["environment"]["cpu_capability"]
    other = "AVX2" if here == "AVX512" else "AVX512"
    path.write_text(json.dumps({**record, "environment": {**record["environment"], "cpu_capability": other}}))

    edit(plugin / "learner.py", "INNER_LR = 0.4", "INNER_LR = 0.2 + 0.2")  # other code, the same numbers
    text = cli("verify", out, code=1)
    expected = f"not replayable here: recorded with {other} CPU kernels, this machine has {here} ones"
    assert f"wrapped-maml/query/seed=0: stale: {expected}; verify it on a CPU with {other}" in text, text

    path.write_text(json.dumps(record))
    assert "wrapped-maml/query/seed=0: verified" in cli("verify", out)


def test_a_verified_record_names_what_changed_since_its_verification():
    made = {"components": {}, "host": {"metabench.runner": "a"}, "libraries": {"torch": "2.14.1"}, "device_type": "cpu"}
    verified_under = {**made, "libraries": {"torch": "2.13.0"}}
    now = {**verified_under, "host": {"metabench.runner": "b"}}
    record = {
        "code_hash": provenance.code_hash(made),
        "provenance": made,
        "verified": {"code_hash": provenance.code_hash(verified_under), "provenance": verified_under, "steps": 10},
    }
    assert provenance.standing(record, verified_under) == ("verified", "verified by replay of 10 steps")
    assert provenance.standing(record, now) == ("stale", "host: module metabench.runner changed")


def test_one_reading_of_the_code_gives_every_record_what_a_reading_of_its_own_gives():
    # a leaderboard reads the code once for all its records (provenance.CodeNow); the committed records mix every
    # built-in kind, and LASIUM samplers that build a VAE or a GAN by name under one sampler name
    registry = default_registry()
    code = provenance.CodeNow(registry)
    built = set()
    for _, record in results.read_records(Path(__file__).parents[1] / "results"):
        now = code.of_record(record)
        assert now == provenance.CodeNow(registry).of_record(record), record["label"]
        built.add(now["components"]["sampler"].get("builds", {}).get("name"))
    assert {None, "vae", "gan"} <= built


def test_a_fingerprint_is_of_meaning_not_bytes(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('"""Doc."""\n\ndef f(x):\n    """Doc."""\n    y = x + 1  # why\n    return y\n')
    before = provenance.module_fingerprint(module)[0]
    module.write_text("def f(x):\n\n    y = (x +\n         1)\n    return y\n")
    assert provenance.module_fingerprint(module)[0] == before
    module.write_text("def f(x):\n    z = x + 1\n    return z\n")
    assert provenance.module_fingerprint(module)[0] != before


def test_records_without_a_probe_say_so(tmp_path, fakes, capsys):
    from benchmark_files import run

    from metabench.cli import main

    bench = write_benchmark(tmp_path / "b.toml", "fake", {"grid.strategies": ["query"]})
    out = tmp_path / "out"
    assert run(bench, "--out", out) == 0
    path = next((out / "runs").glob("*.json"))
    record = json.loads(path.read_text())
    assert record["probe"]["steps"] == 4
    record["code_hash"], record["probe"] = "other-code", None
    path.write_text(json.dumps(record))
    capsys.readouterr()
    assert main(["verify", str(out)]) == 1
    text = capsys.readouterr().out
    assert "no probe" in text and "1 without probe" in text


def test_the_probe_changes_no_number_of_the_run(tmp_path, fake_registry, monkeypatch):
    bench = write_benchmark(tmp_path / "b.toml", "fake", {"training.meta_steps": 6, "grid.strategies": ["query"]})
    (spec,) = config.load_benchmark(bench, fake_registry)
    probed = runner.run(spec, fake_registry, runner.RunOptions(out=tmp_path / "a", device="cpu", progress=False))
    monkeypatch.setattr(probe, "observe", lambda *args, **kwargs: None)
    plain = runner.run(spec, fake_registry, runner.RunOptions(out=tmp_path / "b", device="cpu", progress=False))
    assert probed["probe"]["steps"] == 6 and plain["probe"] is None
    for key in ("metrics", "curves", "diagnostics", "meta_overfitting", "best_step"):
        assert json.dumps(probed[key]) == json.dumps(plain[key]), key
