"""The ``metabench`` command: ``plugins``, ``describe``, ``run``, ``show``, ``leaderboard``, ``reproductions``."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from tabulate import tabulate

from metabench import config, estimate, hookspecs, leaderboard, plan, reproductions, sequential, show, tables, verify
from metabench.benchmark import failure_report, plan_table, run_benchmark
from metabench.errors import MetabenchError
from metabench.executor import Executor, SequentialExecutor
from metabench.ray_executor import RayExecutor, RayOptions
from metabench.registry import KINDS, ComponentSpec, Registry, default_registry
from metabench.runner import RunOptions, resolve_device


def _plugin_rows(registry: Registry, kind: str | None) -> list[dict[str, str]]:
    """One row per component (status ``ok``), per conflicting name and per broken plugin."""
    rows = [
        {
            "kind": s.kind,
            "name": s.name,
            "provider": s.provider.distribution,
            "version": s.provider.version,
            "summary": s.summary,
            "status": "ok",
        }
        for s in (registry.specs(kind) if kind != REPORTER else [])
    ]
    rows += [
        {
            "kind": c.kind,
            "name": c.name,
            "provider": ", ".join(p.distribution for p in c.providers),
            "version": ", ".join(p.version for p in c.providers),
            "summary": c.message(),
            "status": "conflict",
        }
        for c in registry.conflicts.values()
        if kind in (None, c.kind)
    ]
    if kind in (None, REPORTER):
        rows += _reporter_rows(registry)
    if kind is None:
        rows += [
            {
                "kind": "plugin",
                "name": b.plugin,
                "provider": b.provider.distribution,
                "version": b.provider.version,
                "summary": b.error,
                "status": "broken",
            }
            for b in registry.broken
        ]
    return rows


REPORTER = "reporter"  # `metabench plugins --kind reporter`: plugins that implement lifecycle hooks
LIFECYCLE_HOOKS = tuple(h for h in dir(hookspecs) if h.startswith("metabench_") and "_register_" not in h)


def _reporter_rows(registry: Registry) -> list[dict[str, str]]:
    """One row per loaded plugin that implements lifecycle hooks (a reporter), named by its entry point."""
    manager = registry.plugin_manager
    rows = []
    for name, plugin in manager.list_name_plugin():
        hooks = [c.name for c in manager.get_hookcallers(plugin) or [] if c.name in LIFECYCLE_HOOKS]
        if not hooks:
            continue
        provider = registry._providers.get(name)
        rows.append(
            {
                "kind": REPORTER,
                "name": provider.plugin if provider else name,
                "provider": provider.distribution if provider else name,
                "version": provider.version if provider else "",
                "summary": "hooks: " + ", ".join(hook.removeprefix("metabench_") for hook in hooks),
                "status": "ok",
            }
        )
    return rows


def _plugins(args: argparse.Namespace, registry: Registry) -> int:
    rows = _plugin_rows(registry, args.kind)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [
        [
            r["status"].upper() if r["status"] != "ok" else r["kind"],
            r["name"],
            f"{r['provider']} {r['version']}",
            r["summary"],
        ]
        for r in rows
    ]
    print(tabulate(table, headers=["kind", "name", "provider", "summary"], tablefmt="simple"))
    return 0


def describe_text(spec: ComponentSpec) -> str:
    header = f"{spec.kind} '{spec.name}' — {spec.summary}\nprovider: {spec.provider}\ndefined at: {spec.location}\n"
    rows = [[p.name, p.type_name, repr(p.default), _allowed(p.low, p.high, p.choices), p.doc] for p in spec.params]
    params = tabulate(rows, headers=["parameter", "type", "default", "allowed", "doc"]) if rows else "(no parameters)"
    return f"{header}\n{params}\n\n{spec.doc}\n"


def _allowed(low: float | None, high: float | None, choices: tuple | None) -> str:
    if choices:
        return " | ".join(map(str, choices))
    if low is not None and high is not None:
        return f"[{low}, {high}]"
    if low is not None:
        return f">= {low}"
    if high is not None:
        return f"<= {high}"
    return ""


def _describe(args: argparse.Namespace, registry: Registry) -> int:
    print(describe_text(registry.get(args.kind, args.name)))
    return 0


_RAY_FLAGS = {
    "address": "--address",
    "gpus_per_run": "--gpus-per-run",
    "cpus_per_run": "--cpus-per-run",
    "max_parallel": "--max-parallel",
}


_RAY_LIMITS = (
    ("gpus_per_run", lambda v: v >= 0, ">= 0"),
    ("cpus_per_run", lambda v: v > 0, "> 0"),
    ("max_parallel", lambda v: v >= 1, ">= 1"),
)


def _executor(args: argparse.Namespace, registry: Registry) -> Executor:
    """The executor ``--executor`` names, its flags checked before the first run."""
    ray_flags = [flag for key, flag in _RAY_FLAGS.items() if getattr(args, key) is not None]
    if args.executor == "sequential":
        if ray_flags:
            raise MetabenchError(f"{', '.join(ray_flags)}: only with --executor ray (the executor is sequential)")
        resolve_device(args.device)  # fail before the first run, not in each
        return SequentialExecutor(registry)
    if not args.device.startswith("cuda"):  # a CUDA device is the workers' to check: the driver may have none
        resolve_device(args.device)
    for key, valid, allowed in _RAY_LIMITS:
        if (value := getattr(args, key)) is not None and not valid(value):
            raise MetabenchError(f"{_RAY_FLAGS[key]} {value:g}: must be {allowed}")
    settings = {key: value for key in _RAY_FLAGS if (value := getattr(args, key)) is not None}
    return RayExecutor(RayOptions(**settings))


# --report NAME: the built-in reporter (plugins/reporters/NAME.py) and the module its optional extra installs
REPORTERS = {"tensorboard": "tensorboard", "mlflow": "mlflow"}


def _reporters(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    for name in names:
        if name not in REPORTERS:
            raise MetabenchError(f"--report {text}: unknown reporter '{name}'; allowed: {', '.join(REPORTERS)}")
        if importlib.util.find_spec(REPORTERS[name]) is None:
            raise MetabenchError(
                f"--report {name}: the {REPORTERS[name]} package is not installed; "
                f"install the optional extra: pip install 'metabench[{name}]'"
            )
    return names


def _run(args: argparse.Namespace, registry: Registry) -> int:
    options = RunOptions(
        args.out,
        args.device,
        args.threads,
        not args.no_progress,
        report=_reporters(args.report),
        checkpoint_dir=args.checkpoint_dir,
        compile=args.compile,
    )
    selection = plan.Selection(retry_failed=args.retry_failed, rerun=args.rerun, reuse_stale=args.reuse_stale)
    try:
        done = run_benchmark(
            args.file,
            registry=registry,
            profile=args.profile,
            only=args.only,
            overrides=args.set,
            options=options,
            selection=selection,
            executor=_executor(args, registry),
            dry_run=args.dry_run,
            until_decided=args.until_decided,
            max_seeds=args.max_seeds,
        )
    except KeyboardInterrupt:
        print("\ninterrupted: finished runs are kept; rerun the same command to resume", file=sys.stderr)
        return 130
    if args.dry_run:
        print(plan_table(done.planned))
        print(plan.summary(done.planned, selection) + " (dry run: nothing was run or written)")
        if any(p.status != "recorded" for p in done.planned):
            print(estimate.report(estimate.estimate(done.planned, registry, options), options))
        if done.left_untrained:
            print("  not counted: trained once before the first meta-step of the runs that need it (not cached):")
            print("\n".join(f"    {name}" for name in done.left_untrained))
        if done.specs[0].analysis.looks > 1:
            print(sequential.plan_text(done.specs))
        return 0
    summary = ", ".join(f"{n} {status}" for status, n in done.counts().items())
    lost = len(done.specs) - len(done.records)
    if lost:  # a remote run whose worker died on every retry: its checkpoint stays for the rerun
        summary += f", {lost} without a record (rerun to resume)"
    print(f"{summary}; leaderboard: {done.paths[0]}")
    if done.failed:
        print(failure_report(done.failed, _command(args)), file=sys.stderr)
    return 1 if done.failed or lost else 0


def _command(args: argparse.Namespace) -> str:
    """The whole ``metabench run`` invocation as typed (every flag, shell-quoted), for the retry hint."""
    return shlex.join(["metabench", *(arg for arg in args.argv if arg != "--retry-failed")])


def _leaderboard(args: argparse.Namespace, registry: Registry) -> int:
    if not (args.results / "runs").is_dir():
        raise MetabenchError(f"{args.results}: no runs/ folder; run a benchmark first (metabench run FILE)")
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    for fmt in formats:
        if fmt not in ("md", *tables.FORMATS):
            allowed = ", ".join(["md", *tables.FORMATS])
            raise MetabenchError(f"--format {args.format}: unknown format '{fmt}'; allowed: {allowed}")
    paths = leaderboard.write_leaderboard(args.results, registry, plots=not args.no_plots, first=args.first)
    registry.fire("metabench_leaderboard_written", paths=paths)
    extra = [tables.write(args.results, fmt, registry, args.first) for fmt in formats if fmt != "md"]
    print("\n".join(map(str, paths[:3] + extra)))
    return 0


def _show(args: argparse.Namespace, registry: Registry) -> int:
    record = show.find(args.results, args.run)
    print(show.render(record, show.plot(args.results, record), show.cell_of(args.results, record)))
    return 0


def _verify(args: argparse.Namespace, registry: Registry) -> int:
    return verify.verify(args.results, registry, args.steps)


def _reproductions(args: argparse.Namespace, registry: Registry) -> int:
    path, verdicts = reproductions.write_reproductions(args.claims, args.results)
    for verdict in verdicts:
        print(f"{verdict.claim.id:<24} {verdict.profile or '-':<8} {verdict.verdict}")
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metabench", description="Plugin-based benchmark harness for meta-learning.")
    sub = parser.add_subparsers(dest="command", required=True)

    plugins = sub.add_parser("plugins", help="list the registered components of every plugin")
    plugins.add_argument("--kind", choices=[*KINDS, REPORTER], help="only this kind")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.set_defaults(handler=_plugins)

    describe = sub.add_parser("describe", help="a component's parameters, types, defaults and docs")
    describe.add_argument("kind", choices=list(KINDS))
    describe.add_argument("name")
    describe.set_defaults(handler=_describe)

    run = sub.add_parser("run", help="run a benchmark file (skipping finished runs), then write the leaderboard")
    run.add_argument("file", type=Path, help="benchmark TOML, e.g. benchmarks/default.toml")
    run.add_argument("--profile", help="named profile of the file (e.g. quick, paper)")
    run.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    run.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a shared or small machine more threads oversubscribe the cores and "
        "run several times slower; raise it on a dedicated many-core CPU)",
    )
    run.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile each task's meta-gradient (as [training] compile = true); the first run on a machine "
        "pays the compilation, later ones read torch's caches under the metabench cache folder. Not bit-identical to "
        "eager: a compiled record is stale to an eager run and the other way round",
    )
    run.add_argument("--out", type=Path, default=Path("results"), help="results folder (default: results/)")
    run.add_argument("--only", metavar="PATTERN", help=config.SELECT_RULE)
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of the file after the profile, value in TOML: --set training.meta_steps=500 "
        '--set grid.learners=\'["maml","anil"]\' (repeatable)',
    )
    run.add_argument(
        "--report",
        default="",
        metavar="NAMES",
        help=f"also report to these trackers, comma-separated: {', '.join(REPORTERS)} "
        "(optional extras: pip install 'metabench[tensorboard,mlflow]')",
    )
    run.add_argument("--retry-failed", action="store_true", help="run again the runs recorded as failed")
    run.add_argument("--rerun", action="store_true", help="run every selected run again, whatever its record")
    run.add_argument(
        "--reuse-stale",
        action="store_true",
        help="keep records whose config matches but whose code differs (marked stale in the leaderboard)",
    )
    run.add_argument("--dry-run", action="store_true", help="print the plan (cell, seed, status, size); run nothing")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument(
        "--until-decided",
        action="store_true",
        help="after the grid's seeds, add seeds in rounds to the cells of undecided comparisons (error rate kept at "
        "5%% over all rounds); needs --max-seeds or the file's [grid] seeds = { until_decided = true, max = N }",
    )
    run.add_argument("--max-seeds", type=int, metavar="N", help="--until-decided: at most N seeds per cell")
    run.add_argument(
        "--checkpoint-dir", type=Path, help="where runs checkpoint (default: <out>/checkpoints; on a cluster: shared)"
    )
    run.add_argument(
        "--executor",
        choices=["sequential", "ray"],
        default="sequential",
        help="sequential: one run after the other in this process (default); ray: one Ray task per run (needs the "
        "extra: pip install 'metabench[ray]')",
    )
    run.add_argument("--address", help="ray: the cluster to join (default: start Ray on this machine, on 127.0.0.1)")
    run.add_argument("--gpus-per-run", type=float, help="ray: GPUs per run, e.g. 0.5 (default: 1 if any, else 0)")
    run.add_argument(
        "--cpus-per-run", type=float, help=f"ray: CPUs per run (default {RayOptions.cpus_per_run:g}); match --threads"
    )
    run.add_argument("--max-parallel", type=int, help="ray: most runs at once (default: as resources allow)")
    run.set_defaults(handler=_run)

    board = sub.add_parser("leaderboard", help="write LEADERBOARD.md, leaderboard.csv and plots from the records")
    board.add_argument("results", type=Path, nargs="?", default=Path("results"), help="default: results/")
    board.add_argument(
        "--format",
        default="md",
        help=f"comma-separated: md (always written), {', '.join(tables.FORMATS)} (leaderboard.tex / leaderboard.html)",
    )
    board.add_argument("--no-plots", action="store_true", help="tables only: no leaderboard.png, no per-run plots")
    board.add_argument(
        "--first", metavar="NAME", help="the benchmark whose tables lead every file (default: by name, as the others)"
    )
    board.set_defaults(handler=_leaderboard)

    shown = sub.add_parser("show", help="one run: config, provenance, metrics with CIs, diagnostics, curve plot")
    shown.add_argument("run", help="a config-hash prefix or a label glob (sampler/learner/strategy/seed=N)")
    shown.add_argument("--results", type=Path, default=Path("results"), help="results folder (default: results/)")
    shown.set_defaults(handler=_show)

    checked = sub.add_parser(
        "verify", help="replay the first meta-steps of stale records; re-stamp those that match as verified"
    )
    checked.add_argument("results", type=Path, nargs="?", default=Path("results"), help="default: results/")
    checked.add_argument(
        "--steps", type=int, default=None, help="meta-steps to replay (default: all of each record's probe, <= 10)"
    )
    checked.set_defaults(handler=_verify)

    repro = sub.add_parser("reproductions", help="judge the papers' claims against the records: REPRODUCTIONS.md")
    repro.add_argument(
        "claims", type=Path, nargs="?", default=Path("benchmarks/reproductions.toml"), help="claims file"
    )
    repro.add_argument("--results", type=Path, default=Path("results"), help="results folder (default: results/)")
    repro.set_defaults(handler=_reproductions)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *_: print(f"warning: {message}", file=sys.stderr)
        try:
            registry = default_registry()
            code = args.handler(args, registry)
            sys.stdout.flush()  # here, not at exit, so that a closed pipe is handled below
            return code
        except MetabenchError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except BrokenPipeError:  # output piped into a reader that stopped (``| head``): not an error of ours
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # Python's flush at exit would raise again
            return 141


if __name__ == "__main__":
    sys.exit(main())
