"""The papers' headline claims checked against the run records: ``benchmarks/reproductions.toml`` ->
``results/REPRODUCTIONS.md``.

A claim names the cells (sampler, learner and strategy labels of one benchmark) that test it, the paper's number for
each, and how the verdict is decided: ``ranking`` (the cells in the paper's order, each consecutive pair ``<`` -- the
second one ``better`` -- or ``~`` -- ``equivalent`` within the benchmark's margin) or ``value`` (the paper's number
inside our 95% CI over seeds, widened to ``tolerance``). Comparisons are :mod:`metabench.inference`'s, as on the
leaderboard: paired by training seed (only the seeds both cells have), on the same evaluation tasks, and a claim cell
that matches records of several configs is ``ambiguous``, never averaged. A claim is judged at every scale (profile
and its settings) its records ran at: ``reproduced`` when every relation is decided in the paper's direction;
``contradicted`` at the paper's profile and ``not at this scale`` at a smaller one when one is decided against it;
``undecided`` when none is against it but some are not decided, with the seeds that would decide them; ``not run``
when a cell has no successful record. Records are read through :func:`metabench.results.load_records`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metabench import inference, leaderboard, metrics, results
from metabench.cache import stable_hash
from metabench.errors import ConfigError

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
    deltas: tuple[str, ...] = ()  # per relation of a ranking claim: "a < b: Δ [CI], verdict, n seeds (detect ≥ d)"


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


def _configs(runs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[int, dict[str, Any]]]:
    """The runs of one claim cell split into inference cells (config and evaluation tasks), each by seed."""
    cells: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for run in runs:
        key = (stable_hash(leaderboard.cell_config(run["config"])), run.get("tasks_hash") or "")
        cells.setdefault(key, {})[run["config"]["seed"]] = run
    return cells


def _seed_means(runs: dict[int, dict[str, Any]], factor: float) -> dict[int, float]:
    return {seed: factor * run["metrics"]["test"]["mean"] for seed, run in runs.items()}


def _ours(runs: dict[int, dict[str, Any]], factor: float) -> str:
    summary = inference.summarize_cell(list(_seed_means(runs, factor).values()))
    if summary.n_seeds < 2:
        return f"{summary.mean:.2f} (1 seed, no CI)"
    return f"{summary.mean:.2f} ± {summary.ci95:.2f} ({summary.n_seeds} seeds)"


def _margin(runs: dict[int, dict[str, Any]], factor: float) -> float | None:
    """The equivalence margin in the claim's units: the records' ``[benchmark] equivalence_margin`` or the metric's
    default (display units, converted)."""
    run = next(iter(runs.values()))
    metric = (run.get("metric") or {}).get("name", "accuracy")
    margin = ((run["config"].get("analysis") or {}).get("equivalence_margin")) or inference.DEFAULT_MARGIN.get(metric)
    return None if margin is None else margin / inference.DISPLAY_SCALE.get(metric, 1.0) * factor


def _pair(
    lower: dict[int, dict[str, Any]], upper: dict[int, dict[str, Any]], relation: str, factor: float
) -> tuple[str, str, str]:
    """Whether ``lower relation upper`` ``holds``, ``fails`` or is ``undecided``, the finding in words (upper − lower
    paired by seed on the same tasks, only the seeds both have, at the level of the rounds they were run in) and, when
    undecided, what would decide it."""
    tasks = {r.get("tasks_hash") for r in lower.values()}, {r.get("tasks_hash") for r in upper.values()}
    reason = inference.not_comparable(*tasks, set(lower) & set(upper))
    if reason:
        return "undecided", f"not compared: {reason}", ""
    higher_is_better = metrics.goal_of(next(iter(upper.values())).get("metric") or {}) != "minimize"
    # cells run until decided looked at the data once a round: each look spends alpha / looks (harness/sequential.py)
    looks = max((r["config"].get("analysis") or {}).get("looks", 1) for r in (*lower.values(), *upper.values()))
    comparison = inference.compare(_seed_means(upper, factor), _seed_means(lower, factor), inference.ALPHA / looks)
    margin = _margin(upper, factor)
    verdict = inference.verdict(comparison, comparison.p_value, margin, higher_is_better)
    n = len(comparison.seeds)
    text = f"{comparison.delta:+.2f}"
    if n > 1:
        text += f" [{comparison.ci_low:+.2f}, {comparison.ci_high:+.2f}], {verdict}, {n} seeds"
        text += f" (detect ≥ {comparison.mde:.1f})"  # the |Δ| these seeds find at 80% power
    inside = margin is not None and n > 1 and -margin <= comparison.ci_low and comparison.ci_high <= margin
    if relation == "~" and inside:  # equivalent within the margin, even where a small difference is significant
        return "holds", text.replace(f", {verdict},", f", inside ±{margin:g},"), ""
    if relation == "<" and verdict == "better":
        return "holds", text, ""
    if verdict != "undecided" or (relation == "~" and margin is None):
        return "fails", text + ("" if margin is not None or relation == "<" else ", no equivalence margin"), ""
    return "undecided", text, _seeds_to_decide(comparison, relation, margin) if n > 1 else "1 seed: run ≥ 2 to decide"


def _seeds_to_decide(comparison: inference.Comparison, relation: str, margin: float | None) -> str:
    """The seeds that would decide an undecided relation if the observed Δ and seed spread held."""
    if relation == "<":
        n = inference.seeds_to_detect(comparison.sd, comparison.delta, comparison.alpha)
        return f"≈ {n} seeds would detect {comparison.delta:+.2f}" if n else "more seeds than are practical"
    room = (margin or 0.0) - abs(comparison.delta)
    if room <= 0:
        return f"|Δ| is beyond the ±{margin:g} margin: more seeds would not make it equivalent"
    n = inference.seeds_to_bound(comparison.sd, room, comparison.alpha)
    return f"≈ {n} seeds would bound it within ±{margin:g}" if n else "more seeds than are practical"


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
        found = [_configs([r for r in at if _matches(r, claim, cell)]) for cell in claim.cells]
        if not any(found):
            continue
        ours = tuple(
            "not run" if not configs else "; ".join(_ours(runs, factor) for runs in configs.values())
            for configs in found
        )
        missing = [cell.label for cell, configs in zip(claim.cells, found, strict=True) if not configs]
        if missing:
            verdicts.append(Verdict(claim, profile, scale, ours, f"no record for {', '.join(missing)}", "not run"))
            continue
        several = [cell.label for cell, configs in zip(claim.cells, found, strict=True) if len(configs) > 1]
        if several:
            evidence = f"{', '.join(several)}: several configs match (never averaged); name the cells more precisely"
            verdicts.append(Verdict(claim, profile, scale, ours, evidence, "ambiguous"))
            continue
        cells = [next(iter(configs.values())) for configs in found]
        if claim.kind == "value":
            summary = inference.summarize_cell(list(_seed_means(cells[0], factor).values()))
            accepted = max(0.0 if np.isnan(summary.ci95) else summary.ci95, claim.tolerance)
            gap = summary.mean - claim.cells[0].paper
            outcome = "holds" if abs(gap) <= accepted else "fails"
            evidence = f"ours − paper = {gap:+.2f}; accepted within ±{accepted:.2f}"
            outcomes = [outcome]
            deltas: tuple[str, ...] = ()
        else:
            checks = [
                (a.label, relation, b.label, *_pair(cells[i], cells[i + 1], relation, factor))
                for i, (a, b, relation) in enumerate(
                    zip(claim.cells[:-1], claim.cells[1:], claim.relations, strict=True)
                )
            ]
            outcomes = [check[3] for check in checks]
            marks = {"holds": "✓", "fails": "✗", "undecided": "?"}
            evidence = "; ".join(
                f"{a} {r} {b}: {marks[o]} {finding}" + (f"; {advice}" if advice else "")
                for a, r, b, o, finding, advice in checks
            )
            deltas = tuple(f"{a} {r} {b}: {finding}" for a, r, b, _, finding, _ in checks)
        if all(o == "holds" for o in outcomes):
            verdict = "reproduced"
        elif "fails" in outcomes:
            verdict = "contradicted" if profile == claim.paper_profile else "not at this scale"
        else:
            verdict = "undecided"
        verdicts.append(Verdict(claim, profile, scale, ours, evidence, verdict, deltas))
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
        return f"paper's number within our 95% CI over seeds (or ±{claim.tolerance:g})"
    return (
        "in the paper's order: '<' = better (paired by training seed on the same tasks, t-test p < "
        f"{inference.ALPHA:g}), '~' = equivalent (the 95% Δ interval inside ±margin)"
    )


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(verdicts: list[Verdict], claims_path: Path) -> str:
    lines = [
        "# Reproductions",
        "",
        f"Generated by `metabench reproductions` from `{claims_path}` and the run records; do not edit. "
        "Verdicts: *reproduced* (every relation decided in the paper's direction), *not at this scale* (one "
        "decided against it at a profile smaller than the paper's), *contradicted* (decided against it at the "
        "paper's profile), *undecided* (no relation against it, some not decided at the seeds run: the evidence says "
        "how many seeds would decide it), *ambiguous* (a cell matches several configs, which are never averaged), "
        "*not run* (a cell has no record). Every relation is tested at 5% on its own (cells run until decided: at "
        "5% over their looks, α / looks each): a claim needs all of them, so no multiplicity correction is due "
        "(intersection-union). Ours: mean ± 95% t interval over training seeds; a relation's *detect ≥ d*: the |Δ| "
        "its seeds find with 80% power at its level (the detectable Δ).",
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
    return "\n".join(lines + _across_scales(verdicts)) + "\n"


def _across_scales(verdicts: list[Verdict]) -> list[str]:
    """One sentence per claim judged at several scales: its verdict and Δs at each, smallest training first."""
    by_claim: dict[str, list[Verdict]] = {}
    for v in verdicts:
        if v.profile is not None:
            by_claim.setdefault(v.claim.id, []).append(v)
    lines = []
    for claim_id, judged in by_claim.items():
        if len(judged) < 2:
            continue
        judged.sort(key=lambda v: (_steps(v.scale), v.profile == v.claim.paper_profile))
        steps = "; ".join(
            f"{v.scale.split(':', 1)[0]} ({_steps(v.scale)} steps) {v.verdict}"
            + (f" ({'; '.join(v.deltas)})" if v.deltas else "")
            for v in judged
        )
        lines.append(f"- **{claim_id}** as training grows (its rows above, profile and meta-steps): {steps}.")
    return ["", "## Across scales", "", *lines] if lines else []


def _steps(scale: str) -> int:
    """The meta-steps of a scale text (:func:`_scale`)."""
    words = scale.split(" steps", 1)[0].rsplit(" ", 1)
    return int(words[-1]) if words[-1].isdigit() else 0


def write_reproductions(claims_path: Path, out: Path) -> tuple[Path, list[Verdict]]:
    """Judge every claim against the records under ``out`` and write ``out/REPRODUCTIONS.md`` (atomically)."""
    claims = load_claims(claims_path)
    records = results.load_records(out)
    verdicts = [verdict for claim in claims for verdict in judge(claim, records)]
    path = out / "REPRODUCTIONS.md"
    text = render_markdown(verdicts, claims_path)
    results.atomic_write(path, lambda handle: handle.write(text))
    return path, verdicts
