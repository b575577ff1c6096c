"""The papers' headline claims checked against the run records: ``benchmarks/reproductions.toml`` ->
``results/REPRODUCTIONS.md``.

A claim names the cells (sampler, learner and strategy labels of one benchmark) that test it, the paper's number for
each, and how the verdict is decided: ``ranking`` (the cells in the paper's order, each consecutive pair ``<`` --
significantly higher by a paired t-test on the shared evaluation tasks -- or ``~`` -- no significant difference) or
``value`` (the paper's number inside our 95% CI, widened to ``tolerance``). A claim is judged at every scale
(profile and its settings) its records ran at: ``reproduced`` when every relation holds; otherwise ``contradicted``
at the paper's profile and ``not at this scale`` at a smaller one; ``not run`` when a cell has no successful record.
Records are read through :func:`metabench.results.load_records`, only ``config``, ``status`` and ``metrics.test``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metabench import results
from metabench.errors import ConfigError
from metabench.statistics import SIGNIFICANCE, paired_test, summarize

KINDS = ("ranking", "value")
RELATIONS = ("<", "~")
UNITS = {"percent": 100.0, "raw": 1.0}
MATCH_KEYS = ("sampler", "learner", "strategy")


@dataclass(frozen=True)
class Cell:
    label: str  # as the paper names it
    paper: float | None  # the paper's number
    match: dict[str, str]  # record labels: sampler / learner / strategy (missing = any)


@dataclass(frozen=True)
class Claim:
    id: str
    claim: str
    paper: str
    benchmark: str  # the records' config.benchmark
    paper_profile: str  # the profile that runs at the paper's scale
    kind: str
    cells: tuple[Cell, ...]
    relations: tuple[str, ...]  # ranking: between consecutive cells
    tolerance: float  # value: accepted |ours - paper|, beside our CI
    units: str


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    profile: str | None  # None: not run at any profile
    scale: str
    ours: tuple[str, ...]  # per cell: "mean ± ci95 (n seeds)" or "not run"
    evidence: str
    verdict: str


# ------------------------------------------------------------------------------------------------------- claims file
def load_claims(path: Path) -> list[Claim]:
    """The ``[[claim]]`` tables of ``path``, validated; errors name the file and key."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such claims file (e.g. benchmarks/reproductions.toml)") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    entries = raw.get("claim")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: expected [[claim]] tables")
    claims = [_claim(entry, f"{path}: claim[{i}]") for i, entry in enumerate(entries)]
    ids = [claim.id for claim in claims]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"{path}: claim id(s) {duplicates} appear more than once")
    return claims


def _required(entry: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = entry.get(key)
    if not isinstance(value, kind):
        raise ConfigError(f"{where}.{key} = {value!r}: expected a {kind.__name__}")
    return value


def _choice(entry: dict[str, Any], key: str, allowed: tuple[str, ...], default: str, where: str) -> str:
    value = entry.get(key, default)
    if value not in allowed:
        raise ConfigError(f"{where}.{key} = {value!r}: expected one of {', '.join(allowed)}")
    return value


def _claim(entry: dict[str, Any], where: str) -> Claim:
    kind = _choice(entry, "kind", KINDS, "ranking", where)
    cells = []
    for i, cell in enumerate(_required(entry, "cells", list, where)):
        cell_where = f"{where}.cells[{i}]"
        if not isinstance(cell, dict):
            raise ConfigError(f"{cell_where}: expected a table {{ label, paper, sampler, learner, strategy }}")
        paper = cell.get("paper")
        if paper is not None and not isinstance(paper, int | float):
            raise ConfigError(f"{cell_where}.paper = {paper!r}: expected a number")
        unknown = sorted(set(cell) - {"label", "paper", *MATCH_KEYS})
        if unknown:
            raise ConfigError(f"{cell_where}: unknown key(s) {unknown}; allowed: label, paper, {', '.join(MATCH_KEYS)}")
        match = {key: cell[key] for key in MATCH_KEYS if key in cell}
        cells.append(Cell(_required(cell, "label", str, cell_where), paper, match))
    relations = tuple(entry.get("relations", []))
    if kind == "ranking":
        if len(cells) < 2 or len(relations) != len(cells) - 1:
            raise ConfigError(
                f"{where}: a ranking needs >= 2 cells and one relation between each consecutive pair; got "
                f"{len(cells)} cells and relations = {list(relations)}"
            )
        bad = [r for r in relations if r not in RELATIONS]
        if bad:
            raise ConfigError(f"{where}.relations: {bad} not in {', '.join(RELATIONS)}")
    elif len(cells) != 1 or cells[0].paper is None:
        raise ConfigError(f"{where}: a value claim needs exactly one cell with the paper's number")
    return Claim(
        id=_required(entry, "id", str, where),
        claim=_required(entry, "claim", str, where),
        paper=_required(entry, "paper", str, where),
        benchmark=_required(entry, "benchmark", str, where),
        paper_profile=_required(entry, "paper_profile", str, where),
        kind=kind,
        cells=tuple(cells),
        relations=relations,
        tolerance=float(entry.get("tolerance", 0.0)),
        units=_choice(entry, "units", tuple(UNITS), "percent", where),
    )


# ---------------------------------------------------------------------------------------------------------- verdicts
def _matches(record: dict[str, Any], claim: Claim, cell: Cell) -> bool:
    config = record["config"]
    return config["benchmark"] == claim.benchmark and all(
        config[key]["label"] == label for key, label in cell.match.items()
    )


def _scale(record: dict[str, Any]) -> str:
    """The scale a record ran at, in words; a regression protocol's ``n_way`` is unused, so it is not shown."""
    config = record["config"]
    protocol, training = config["protocol"], config["training"]
    classification = (record.get("metric") or {}).get("name", "accuracy") == "accuracy" and protocol.get("n_way")
    shape = f"{protocol['n_way']}-way {protocol['k_shot']}-shot" if classification else f"{protocol['k_shot']}-point"
    return (
        f"{config.get('profile') or '-'}: {config['dataset']['label']} {shape}, {training['meta_steps']} steps × "
        f"{training['meta_batch']} tasks (Adam {training.get('meta_lr', '-')}), {config['backbone']['label']} "
        f"{config['backbone']['params']}"
    )


def _cell_summary(runs: list[dict[str, Any]], factor: float) -> tuple[float, float, int]:
    """Mean over seeds, its 95% CI (over seeds when there are several, else over the one run's tasks), seeds."""
    means = [run["metrics"]["test"]["mean"] * factor for run in runs]
    if len(means) > 1:
        return float(np.mean(means)), summarize(means)["ci95"], len(means)
    return means[0], runs[0]["metrics"]["test"]["ci95"] * factor, 1


def _task_scores(runs: list[dict[str, Any]], seeds: list[int], factor: float) -> np.ndarray:
    chosen = sorted((run for run in runs if run["config"]["seed"] in seeds), key=lambda run: run["config"]["seed"])
    return factor * np.mean([np.asarray(run["metrics"]["test"]["per_task"], dtype=np.float64) for run in chosen], 0)


def _pair(lower: list[dict[str, Any]], upper: list[dict[str, Any]], relation: str, factor: float) -> tuple[bool, str]:
    """Whether ``lower relation upper`` holds on the shared tasks (per-task scores averaged over shared seeds)."""
    seeds = sorted({r["config"]["seed"] for r in lower} & {r["config"]["seed"] for r in upper})
    if not seeds:
        seeds_a, seeds_b = [r["config"]["seed"] for r in lower], [r["config"]["seed"] for r in upper]
        a, b = _task_scores(lower, seeds_a, factor), _task_scores(upper, seeds_b, factor)
    else:
        a, b = _task_scores(lower, seeds, factor), _task_scores(upper, seeds, factor)
    difference, p = paired_test(b, a)
    if relation == "<":
        return difference > 0 and p < SIGNIFICANCE, f"{difference:+.2f} (p = {p:.2g})"
    return p >= SIGNIFICANCE, f"{difference:+.2f} (p = {p:.2g})"


def judge(claim: Claim, records: list[dict[str, Any]]) -> list[Verdict]:
    """The claim's verdict at each scale its records ran at (profile and the scale it stood for when the records were
    made; the paper's profile first), or one 'not run'."""
    ok = [r for r in records if r["status"] == "ok" and r["config"]["benchmark"] == claim.benchmark]
    scales = sorted(
        {(r["config"].get("profile") or "-", _scale(r)) for r in ok},
        key=lambda key: (key[0] != claim.paper_profile, key),
    )
    factor = UNITS[claim.units]
    verdicts = []
    for profile, scale in scales:
        at = [r for r in ok if (r["config"].get("profile") or "-", _scale(r)) == (profile, scale)]
        runs = [[r for r in at if _matches(r, claim, cell)] for cell in claim.cells]
        ours = tuple(
            "not run"
            if not cell_runs
            else "{:.2f} ± {:.2f} ({} seed{})".format(
                *_cell_summary(cell_runs, factor), "s" if len(cell_runs) > 1 else ""
            )
            for cell_runs in runs
        )
        if not any(runs):
            continue
        missing = [cell.label for cell, cell_runs in zip(claim.cells, runs, strict=True) if not cell_runs]
        if missing:
            verdicts.append(Verdict(claim, profile, scale, ours, f"no record for {', '.join(missing)}", "not run"))
            continue
        if claim.kind == "value":
            mean, ci, _ = _cell_summary(runs[0], factor)
            gap = mean - claim.cells[0].paper
            holds = abs(gap) <= max(ci, claim.tolerance)
            evidence = f"ours − paper = {gap:+.2f}; accepted within ±{max(ci, claim.tolerance):.2f}"
        else:
            checks = [
                (a.label, relation, b.label, *_pair(runs[i], runs[i + 1], relation, factor))
                for i, (a, b, relation) in enumerate(
                    zip(claim.cells[:-1], claim.cells[1:], claim.relations, strict=True)
                )
            ]
            holds = all(check[3] for check in checks)
            evidence = "; ".join(f"{a} {r} {b}: {'✓' if ok else '✗'} {text}" for a, r, b, ok, text in checks)
        if holds:
            verdict = "reproduced"
        else:
            verdict = "contradicted" if profile == claim.paper_profile else "not at this scale"
        verdicts.append(Verdict(claim, profile, scale, ours, evidence, verdict))
    if not verdicts:
        ours = ("not run",) * len(claim.cells)
        verdicts.append(
            Verdict(
                claim,
                None,
                "-",
                ours,
                f"no successful record of these cells in benchmark '{claim.benchmark}'",
                "not run",
            )
        )
    return verdicts


# ---------------------------------------------------------------------------------------------------------- markdown
def _how(claim: Claim) -> str:
    if claim.kind == "value":
        return f"paper's number within our 95% CI (or ±{claim.tolerance:g})"
    return (
        "in the paper's order: '<' = higher by a paired t-test on the shared evaluation tasks "
        f"(p < {SIGNIFICANCE}), '~' = no significant difference"
    )


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(verdicts: list[Verdict], claims_path: Path) -> str:
    lines = [
        "# Reproductions",
        "",
        f"Generated by `metabench reproductions` from `{claims_path}` and the run records; do not edit. "
        "Verdicts: *reproduced* (every relation holds), *not at this scale* (it does not hold at a profile smaller "
        "than the paper's), *contradicted* (it does not hold at the paper's profile), *not run* (a cell has no "
        "record). Ours: mean ± 95% CI over seeds (over tasks for one seed).",
        "",
        "| claim | paper | cells: paper → ours | scale | evidence | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for v in verdicts:
        cells = "<br>".join(
            f"{cell.label}: {'-' if cell.paper is None else f'{cell.paper:g}'} → {ours}"
            for cell, ours in zip(v.claim.cells, v.ours, strict=True)
        )
        row = [
            f"**{v.claim.id}**: {v.claim.claim}",
            v.claim.paper,
            cells,
            v.scale,
            f"{v.evidence}<br>*{_how(v.claim)}*",
            f"**{v.verdict}**",
        ]
        lines.append("| " + " | ".join(_escape(part) for part in row) + " |")
    return "\n".join(lines) + "\n"


def write_reproductions(claims_path: Path, out: Path) -> tuple[Path, list[Verdict]]:
    """Judge every claim against the records under ``out`` and write ``out/REPRODUCTIONS.md`` (atomically)."""
    claims = load_claims(claims_path)
    records = results.load_records(out)
    verdicts = [verdict for claim in claims for verdict in judge(claim, records)]
    path = out / "REPRODUCTIONS.md"
    text = render_markdown(verdicts, claims_path)
    results.atomic_write(path, lambda handle: handle.write(text))
    return path, verdicts
