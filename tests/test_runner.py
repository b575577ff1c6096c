"""The runner's mechanics on fake components: records, failures, not-applicable, resume, hooks, the CI math."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import fake_components
import pytest
import torch
from benchmark_files import run, write_benchmark

from metabench import hookimpl, plan, results
from metabench.cli import main
from metabench.evaluation import fixed_tasks
from metabench.executor import SequentialExecutor, recorded
from metabench.interfaces import SamplerContext
from metabench.leaderboard import write_leaderboard
from metabench.registry import Registry
from metabench.runner import RunOptions
from metabench.runspec import ComponentRef, EvalProtocol, RunSpec, Training
from metabench.seeds import make_generator
from metabench.statistics import summarize
from metabench.tasks import TaskShape


class Recorder:
    """A reporter plugin: keeps every lifecycle event; can interrupt seed 0 like Ctrl-C at a given step."""

    def __init__(self, interrupt_at: int = 0):
        self.events: list[tuple[str, Any]] = []
        self.interrupt_at = interrupt_at

    @hookimpl
    def metabench_run_started(self, spec):
        self.events.append(("started", spec.label))

    @hookimpl
    def metabench_step_finished(self, spec, step, metrics):
        self.events.append(("step", step))
        assert "loss" in metrics
        if step == self.interrupt_at and spec.seed == 0:
            raise KeyboardInterrupt

    @hookimpl
    def metabench_evaluation_finished(self, spec, split, scores):
        self.events.append((split, scores["step"]))

    @hookimpl
    def metabench_run_finished(self, spec, record):
        self.events.append(("finished", record["status"]))

    @hookimpl
    def metabench_leaderboard_written(self, paths):
        self.events.append(("leaderboard", [p.name for p in paths]))

    def of(self, kind: str) -> list[Any]:
        return [value for name, value in self.events if name == kind]


def registry_with(*plugins: object) -> Registry:
    return Registry.load(extra_plugins=[fake_components, *plugins], entry_points=False)


def spec(seed: int = 0, steps: int = 12, strategy: str = "query", **learner: Any) -> RunSpec:
    return RunSpec(
        benchmark="fake",
        dataset=ComponentRef.of("fake-images", {"examples": 6}),
        sampler=ComponentRef.of("standard"),
        learner=ComponentRef.of(
            "fake-learner", {"fail_at": 0, "nan_at": 0, "refuse": "", "meta_trains": True, **learner}
        ),
        strategy=ComponentRef.of(strategy),
        backbone=ComponentRef.of("fake-mlp", {"hidden": 8}),
        protocol=EvalProtocol(n_way=3, k_shot=1, k_query=2, eval_tasks=30, val_tasks=8, eval_chunk=7),
        training=Training(meta_steps=steps, meta_batch=2, meta_lr=0.05, validate_every=4, checkpoint_every=5),
        seed=seed,
    )


def options(out: Path) -> RunOptions:
    return RunOptions(out=out, device="cpu", progress=False)


def run_grid(registry: Registry, specs: list[RunSpec], out: Path, **selection: bool) -> list[dict[str, Any]]:
    """Plan ``specs`` once and run what the plan selects, as ``metabench run`` does; the records of all ``specs``."""
    planned = plan.plan(specs, options(out), registry)
    SequentialExecutor(registry).run(plan.to_run(planned, plan.Selection(**selection)), options(out))
    return recorded(specs, options(out))


def test_summary_matches_a_hand_computation():
    summary = summarize([1.0, 2.0, 3.0, 4.0])
    std = math.sqrt((1.5**2 + 0.5**2 + 0.5**2 + 1.5**2) / 3)  # sample standard deviation
    assert summary["mean"] == pytest.approx(2.5)
    assert summary["std"] == pytest.approx(std)
    assert summary["ci95"] == pytest.approx(1.96 * std / 2)
    assert summary["n"] == 4


def test_a_run_writes_a_complete_record(tmp_path):
    recorder = Recorder()
    [record] = SequentialExecutor(registry_with(recorder)).run([spec()], options(tmp_path))
    assert record["status"] == "ok" and record["error"] is None
    assert (tmp_path / "runs" / f"{spec().config_hash}.json").exists()
    test = record["metrics"]["test"]
    assert test["n"] == 30 and len(test["per_task"]) == 30
    assert test["mean"] == pytest.approx(sum(test["per_task"]) / 30, abs=1e-5)
    assert test["ci95"] == pytest.approx(summarize(test["per_task"])["ci95"], abs=1e-5)
    assert [c["step"] for c in record["curves"]] == [4, 8, 12]
    assert {"train_pre", "train_post", "val_pre", "val_post"} <= set(record["curves"][0])
    assert set(record["meta_overfitting"]) == {"meta_train", "meta_test"}
    assert record["diagnostics"] == {"grad_norm_support": 1.0, "grad_norm_query": 2.0}
    assert record["steps"] == 12 and record["steps_per_s"] > 0 and record["best_step"] in (4, 8, 12)
    assert record["environment"]["device"] == "cpu" and record["environment"]["versions"]["torch"]
    assert not results.checkpoint_path(tmp_path / "checkpoints", spec()).exists()
    # every lifecycle hook fired, in order
    assert recorder.of("started") == [spec().label]
    assert recorder.of("step") == list(range(1, 13))
    assert recorder.of("val") == [4, 8, 12] and recorder.of("test") == [None]
    assert recorder.of("finished") == ["ok"]


def test_same_seed_same_numbers_and_evaluation_tasks_are_fixed(tmp_path):
    registry = registry_with()
    first = SequentialExecutor(registry).run([spec(seed=3)], options(tmp_path / "a"))[0]
    second = SequentialExecutor(registry).run([spec(seed=3)], options(tmp_path / "b"))[0]
    assert first["metrics"]["test"]["per_task"] == second["metrics"]["test"]["per_task"]
    dataset = fake_components.FakeImages()
    context = SamplerContext(torch.device("cpu"), 0, tmp_path, "fake-key")
    protocol = EvalProtocol(n_way=3, k_query=2)
    sampler = fake_components.FakeSampler()
    tasks = fixed_tasks(dataset, sampler, "standard", "test", 5, protocol, context)
    # the sampler bound for the test split with a generator seeded by (eval seed, split), whatever the run
    source = sampler.bind(dataset.split("test"), TaskShape(3, 1, 2), context, role="test")
    assert torch.equal(source(5, make_generator(protocol.eval_seed, "test")).query_x, tasks.query_x)
    assert not torch.equal(
        fixed_tasks(dataset, sampler, "standard", "val", 5, protocol, context).query_x, tasks.query_x
    )


def test_failing_and_nan_runs_are_recorded_and_the_others_go_on(tmp_path):
    specs = [spec(fail_at=3), spec(nan_at=2), spec(seed=1)]
    records = SequentialExecutor(registry_with()).run(specs, options(tmp_path))
    assert [r["status"] for r in records] == ["failed", "failed", "ok"]
    assert "RuntimeError: fake failure at step 3" in records[0]["error"]
    assert "NonFiniteLoss" in records[1]["error"] and "step 2" in records[1]["error"]
    write_leaderboard(tmp_path)
    board = (tmp_path / "LEADERBOARD.md").read_text()
    assert "fake failure at step 3" in board and "NonFiniteLoss" in board


def test_not_applicable_is_recorded_with_the_reason(tmp_path):
    recorder = Recorder()
    [record] = SequentialExecutor(registry_with(recorder)).run(
        [spec(strategy="support", refuse="support")], options(tmp_path)
    )
    assert record["status"] == "not-applicable"
    assert record["error"] == "fake learner refuses 'support'"
    assert recorder.of("step") == [] and recorder.of("finished") == ["not-applicable"]


def test_interrupted_run_resumes_from_its_checkpoint_and_finished_runs_are_skipped(tmp_path):
    reference = SequentialExecutor(registry_with()).run([spec()], options(tmp_path / "reference"))[0]

    out = tmp_path / "interrupted"
    first = Recorder(interrupt_at=7)
    executor = SequentialExecutor(registry_with(first))
    with pytest.raises(KeyboardInterrupt):
        executor.run([spec(seed=1), spec()], options(out))
    assert first.of("finished") == ["ok"]  # seed 1 finished before the interrupted run
    assert results.checkpoint_path(out / "checkpoints", spec()).exists() and results.load_record(out, spec()) is None

    second = Recorder()
    records = run_grid(registry_with(second), [spec(seed=1), spec()], out)
    assert second.of("started") == [spec().label]  # the finished run is not run again
    assert second.of("step") == list(range(6, 13))  # resumed after the checkpoint at step 5
    assert records[1]["resumed_from"] == 5
    assert records[1]["metrics"]["test"]["per_task"] == reference["metrics"]["test"]["per_task"]
    assert records[1]["curves"] == reference["curves"]

    third = Recorder()
    run_grid(registry_with(third), [spec(seed=1), spec()], out)
    assert third.events == []


def test_retry_failed_runs_failed_records_again(tmp_path):
    failing = spec(fail_at=2)
    run_grid(registry_with(), [failing], tmp_path)
    recorder = Recorder()
    run_grid(registry_with(recorder), [failing], tmp_path)
    assert recorder.events == []
    run_grid(registry_with(recorder), [failing], tmp_path, retry_failed=True)
    assert recorder.of("finished") == ["failed"]


def test_jsonl_reporter_logs_every_event(tmp_path, monkeypatch):
    from metabench.plugins import reporters

    log = tmp_path / "events.jsonl"
    monkeypatch.setenv("METABENCH_LOG", str(log))
    registry = registry_with(reporters)
    SequentialExecutor(registry).run([spec(steps=4)], options(tmp_path))
    registry.fire("metabench_leaderboard_written", paths=write_leaderboard(tmp_path, registry))
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert events == [
        "run_started",
        *["step_finished"] * 4,
        "evaluation_finished",
        "evaluation_finished",
        "run_finished",
        "leaderboard_written",
    ]


def test_cli_runs_a_tiny_real_benchmark_end_to_end(tmp_path, capsys):
    grid = {
        "grid.samplers": ["standard", "nme"],
        "grid.learners": ["maml", "protonet"],
        "grid.strategies": ["query", "metamix"],
    }
    path = write_benchmark(tmp_path / "tiny.toml", "omniglot", grid)
    out = tmp_path / "results"
    assert run(path, "--out", out, "--only", "seed=0") == 0
    records = results.load_records(out)
    assert len(records) == 8 and {r["status"] for r in records} <= {"ok", "not-applicable"}
    assert "leaderboard:" in capsys.readouterr().out
    text = (out / "LEADERBOARD.md").read_text()
    assert "## tiny-omniglot" in text and "metamix" in text
    assert main(["leaderboard", str(out)]) == 0


MAPPED_BLOCKS_AFTER_A_RUN = """
import ctypes, sys, torch
from benchmark_files import run
if sys.argv[1] == "run":
    assert run(sys.argv[2], "--out", sys.argv[3]) == 0
class Mallinfo2(ctypes.Structure):  # glibc's struct mallinfo2 (malloc.h): ten size_t counters
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = Mallinfo2
before = mallinfo2().hblks
block = torch.empty(31 << 18)  # 31 MB, just under glibc's largest mmap threshold (32 MiB on 64-bit)
print(mallinfo2().hblks - before)
"""


GLIBC = platform.libc_ver()


@pytest.mark.skipif(
    GLIBC[0] != "glibc" or tuple(map(int, GLIBC[1].split("."))) < (2, 33), reason="glibc's mallinfo2 (2.33 on)"
)
def test_a_cpu_run_keeps_freed_memory_for_the_next_allocation(tmp_path):
    def mapped_blocks(*args: object) -> int:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
        done = subprocess.run(
            [sys.executable, "-c", MAPPED_BLOCKS_AFTER_A_RUN, *map(str, args)], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return int(done.stdout.split()[-1])

    # glibc's default maps a block this large by itself (and hands it back to the kernel when it is freed, so that
    # the next step faults it in afresh); after a CPU run it comes from the heap, which keeps freed memory
    assert mapped_blocks("no run") == 1
    assert mapped_blocks("run", write_benchmark(tmp_path / "sine.toml", "sine"), tmp_path / "out") == 0
