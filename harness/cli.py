"""The ``metabench`` command: ``plugins``, ``describe``, ``run``, ``leaderboard``."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence

from tabulate import tabulate

from metabench.errors import MetabenchError
from metabench.registry import KINDS, ComponentSpec, Registry, default_registry


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
