"""The ``metabench`` command: ``plugins``, ``describe``, ``run``, ``leaderboard``, ``reproductions``."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from tabulate import tabulate

from metabench import config, leaderboard, reproductions
from metabench.errors import MetabenchError
from metabench.executor import SequentialExecutor
from metabench.registry import KINDS, ComponentSpec, Registry, default_registry
from metabench.runner import RunOptions, resolve_device


def _plugins(args: argparse.Namespace, registry: Registry) -> int:
    specs = registry.specs(args.kind)
    broken = [] if args.kind else registry.broken
    if args.json:
        rows = [
            {
                "kind": s.kind,
                "name": s.name,
                "provider": s.provider.distribution,
                "version": s.provider.version,
                "summary": s.summary,
                "status": "ok",
            }
            for s in specs
        ] + [
            {
                "kind": "plugin",
                "name": b.plugin,
                "provider": b.provider.distribution,
                "version": b.provider.version,
                "summary": b.error,
                "status": "broken",
            }
            for b in broken
        ]
        print(json.dumps(rows, indent=2))
        return 0
    table = [[s.kind, s.name, str(s.provider), s.summary] for s in specs]
    table += [["BROKEN", b.plugin, str(b.provider), b.error] for b in broken]
    print(tabulate(table, headers=["kind", "name", "provider", "summary"], tablefmt="simple"))
    return 0


def describe_text(spec: ComponentSpec) -> str:
    header = f"{spec.kind} '{spec.name}' — {spec.summary}\nprovider: {spec.provider}\n"
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


def _run(args: argparse.Namespace, registry: Registry) -> int:
    specs = config.select(config.load_benchmark(args.file, registry, profile=args.profile), args.only)
    if not specs:
        raise MetabenchError(f"{args.file}: no run matches --only {args.only!r}")
    if args.threads < 1:
        raise MetabenchError(f"--threads {args.threads}: must be >= 1")
    resolve_device(args.device)  # fail before the first run, not in each
    options = RunOptions(args.out, args.device, args.threads, not args.no_progress, args.retry_failed)
    try:
        records = SequentialExecutor(registry).run(specs, options)
    except KeyboardInterrupt:
        print("\ninterrupted: finished runs are kept; rerun the same command to resume", file=sys.stderr)
        return 130
    paths = leaderboard.write_leaderboard(args.out, registry)
    counts = {status: sum(r["status"] == status for r in records) for status in ("ok", "not-applicable", "failed")}
    print(", ".join(f"{n} {status}" for status, n in counts.items()) + f"; leaderboard: {paths[0]}")
    return 1 if counts["failed"] else 0


def _leaderboard(args: argparse.Namespace, registry: Registry) -> int:
    if not (args.results / "runs").is_dir():
        raise MetabenchError(f"{args.results}: no runs/ folder; run a benchmark first (metabench run FILE)")
    paths = leaderboard.write_leaderboard(args.results, registry)
    print("\n".join(map(str, paths[:3])))
    return 0


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
    plugins.add_argument("--kind", choices=list(KINDS), help="only this kind")
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
    run.add_argument("--out", type=Path, default=Path("results"), help="results folder (default: results/)")
    run.add_argument("--only", metavar="PATTERN", help="glob on sampler/learner/strategy/seed=N, or on one part")
    run.add_argument("--retry-failed", action="store_true", help="run again the runs recorded as failed")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.set_defaults(handler=_run)

    board = sub.add_parser("leaderboard", help="write LEADERBOARD.md, leaderboard.csv and plots from the records")
    board.add_argument("results", type=Path, nargs="?", default=Path("results"), help="default: results/")
    board.set_defaults(handler=_leaderboard)

    repro = sub.add_parser("reproductions", help="judge the papers' claims against the records: REPRODUCTIONS.md")
    repro.add_argument(
        "claims", type=Path, nargs="?", default=Path("benchmarks/reproductions.toml"), help="claims file"
    )
    repro.add_argument("--results", type=Path, default=Path("results"), help="results folder (default: results/)")
    repro.set_defaults(handler=_reproductions)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *_: print(f"warning: {message}", file=sys.stderr)
        try:
            registry = default_registry()
            return args.handler(args, registry)
        except MetabenchError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
