"""Outer-loop data strategies on non-mutually-exclusive Omniglot with MAML.

Runs ``benchmarks/nme_strategies.toml`` (finished runs are read back, not rerun; an interrupted run resumes from its
checkpoint) and prints, from the run records and the leaderboard's aggregation:

(a) MetaMix Table 16: query (Dq), mixup-ss, mixup-qq, cob and metamix, mean accuracy ± 95% CI on the same fixed
    test tasks, the measured ranking next to Table 16's (20-way 1-shot NME Omniglot), and whether it reproduces;
(b) beyond the papers: multimix, multi-mix and metamixup against query and metamix;
(c) the meta-overfitting diagnostics of every cell: pre/post-adaptation accuracy on meta-train and meta-test queries,
    the pre-adaptation meta-train accuracy over training (MetaMix Fig. 2), support/query gradient norms of the outer
    loss (Fig. 3) and the top singular value of the support representations (Table 1).

    python benchmarks/repro_nme_strategies.py [--profile quick|paper] [--device auto] [--threads 1] [--out results]
                                              [--only PATTERN] [--benchmark FILE]

The ``quick`` profile (this 2-core CPU, ``--threads 1`` beside another job): see the timing note in the TOML file.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from metabench import inference, leaderboard
from metabench.benchmark import run_benchmark
from metabench.runner import RunOptions

BENCHMARK = Path(__file__).with_name("nme_strategies.toml")
RESULTS = Path(__file__).resolve().parents[1] / "results"

# MetaMix Table 16: MAML, NME Omniglot 20-way 1-shot, accuracy % (95% CI). Rank 1 = best.
PAPER = {
    "metamix": ("MetaMix", 91.53, 0.53),
    "mixup-qq": ("Mixup(Dq,Dq)", 90.65, 0.56),
    "query": ("Dq", 87.40, 0.59),
    "cob": ("Dcob = Ds ⊕ Dq", 86.74, 0.54),
    "mixup-ss": ("Mixup(Ds,Ds)", 46.98, 0.92),
}
BEYOND_PAPERS = ["query", "metamix", "multimix", "multi-mix", "metamixup"]


def _cells(records: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs frame and its aggregate (one row per strategy), indexed by strategy name."""
    runs = leaderboard.runs_frame(records)
    cells = leaderboard.aggregate(runs)
    return runs, cells.set_index("strategy_name")


def _versus(runs: pd.DataFrame, a: str, b: str) -> inference.Comparison | str:
    """``a − b`` paired by training seed (:func:`metabench.inference.compare_cells`), or why not compared."""
    ok = runs[runs["status"] == "ok"]
    return inference.compare_cells(ok[ok["strategy_name"] == a], ok[ok["strategy_name"] == b])


def _verdict(outcome: inference.Comparison | str) -> str:
    """The leaderboard's verdict for one comparison on its own (no multiplicity correction: each claim is one)."""
    if isinstance(outcome, str):
        return "undecided"
    return inference.verdict(outcome, outcome.p_value, inference.DEFAULT_MARGIN["accuracy"] / 100, True)


def _accuracy(cell: pd.Series) -> str:
    ci = "" if np.isnan(cell["ci95"]) else f" ± {100 * cell['ci95']:.2f}"
    return f"{100 * cell['mean']:.2f}{ci} ({cell['seeds']} seeds)"


def _delta(outcome: inference.Comparison | str) -> str:
    if isinstance(outcome, str):
        return f"not compared: {outcome}"
    if len(outcome.seeds) < 2:
        return f"{100 * outcome.delta:+.2f} (1 seed: undecided)"
    interval = f"[{100 * outcome.ci_low:+.2f}, {100 * outcome.ci_high:+.2f}]"
    return f"{100 * outcome.delta:+.2f} {interval} {_verdict(outcome)}"


def _measured_ranks(cells: pd.DataFrame, names: list[str]) -> pd.Series:
    return cells.loc[names, "mean"].rank(ascending=False, method="min").astype(int)


def table16(runs: pd.DataFrame, cells: pd.DataFrame) -> str:
    names = [n for n in PAPER if n in cells.index]
    ranks = _measured_ranks(cells, names)
    paper_ranks = {name: rank for rank, name in enumerate(PAPER, start=1)}
    rows = []
    for name in sorted(names, key=lambda n: ranks[n]):
        cell = cells.loc[name]
        versus = "" if name == "query" else _delta(_versus(runs, name, "query"))
        title, mean, ci = PAPER[name]
        rows.append([ranks[name], name, _accuracy(cell), versus, paper_ranks[name], title, f"{mean:.2f} ± {ci:.2f}"])
    headers = ["rank", "strategy", "accuracy % ± 95% CI seeds", "Δ vs query (paired by seed)", "paper rank", "paper"]
    headers.append("paper %")
    table = tabulate(rows, headers=headers, tablefmt="github")
    return table + "\n\n" + "\n".join(_ranking_verdict(runs, cells, names))


def _ranking_verdict(runs: pd.DataFrame, cells: pd.DataFrame, names: list[str]) -> list[str]:
    """Table 16's four claims, each decided by the leaderboard's seed-paired comparison."""
    if set(names) != set(PAPER):
        return [f"ranking: not checked, strategies missing: {', '.join(sorted(set(PAPER) - set(names)))}"]
    mean = cells["mean"]

    def beats(a: str, b: str) -> tuple[str, str]:
        outcome = _versus(runs, a, b)
        return _verdict(outcome), f"{a} − {b} = {_delta(outcome)}"

    def status(verdicts: list[str], wanted: str) -> str:
        """yes: all decided as the paper says; no: one decided otherwise; ?: the rest (more seeds would tell)."""
        if all(v == wanted for v in verdicts):
            return "yes"
        return "?" if all(v in (wanted, "undecided") for v in verdicts) else "no"

    claims = []
    for claim, pairs in [
        ("Mixup(Ds,Ds) worst", [(other, "mixup-ss") for other in names if other != "mixup-ss"]),
        ("Mixup(Dq,Dq) better than Dq and Dcob", [("mixup-qq", "query"), ("mixup-qq", "cob")]),
        ("MetaMix best", [("metamix", other) for other in names if other != "metamix"]),
    ]:
        checked = [beats(a, b) for a, b in pairs]
        claims.append((claim, status([v for v, _ in checked], "better"), "; ".join(text for _, text in checked)))
    outcome = _versus(runs, "cob", "query")
    claims.insert(
        1, ("Dq ≈ Dcob (equivalent)", status([_verdict(outcome)], "equivalent"), f"cob − query = {_delta(outcome)}")
    )
    measured = " > ".join(mean[names].sort_values(ascending=False).index)
    lines = [f"paper ranking:    {' > '.join(PAPER)}", f"measured ranking: {measured}"]
    lines += [f"  [{state:>3}] {claim}: {evidence}" for claim, state, evidence in claims]
    counts = {state: sum(s == state for _, s, _ in claims) for state in ("yes", "no", "?")}
    lines.append(
        f"Table 16's claims here: {counts['yes']} decided as the paper says, {counts['no']} decided otherwise, "
        f"{counts['?']} undecided at these seeds (yes / no / ?)."
    )
    return lines


def beyond_papers_table(runs: pd.DataFrame, cells: pd.DataFrame) -> str:
    names = [n for n in BEYOND_PAPERS if n in cells.index]
    ranks = _measured_ranks(cells, names)
    rows = []
    for name in sorted(names, key=lambda n: ranks[n]):
        cell = cells.loc[name]
        versus_query = "" if name == "query" else _delta(_versus(runs, name, "query"))
        versus_metamix = "" if name == "metamix" or "metamix" not in names else _delta(_versus(runs, name, "metamix"))
        rows.append([ranks[name], name, _accuracy(cell), versus_query, versus_metamix, f"{cell['steps_per_s']:.2f}"])
    headers = ["rank", "strategy", "accuracy % ± 95% CI seeds", "Δ vs query", "Δ vs metamix", "steps/s"]
    return tabulate(rows, headers=headers, tablefmt="github")


def diagnostics_table(records: list[dict], cells: pd.DataFrame) -> str:
    """Meta-overfitting per strategy, means over seeds; ``train pre @ step`` follows the memorisation over training."""
    curves = pd.DataFrame(
        [
            {"strategy": record["config"]["strategy"]["name"], **point}
            for record in records
            if record["status"] == "ok"
            for point in record.get("curves") or []
        ]
    )
    steps = sorted(curves["step"].unique()) if len(curves) else []
    train_pre = curves.groupby(["strategy", "step"])["train_pre"].mean() if len(curves) else pd.Series(dtype=float)
    columns = leaderboard.ANALYSIS_COLUMNS
    present = [c for c in columns if c in cells]
    rows = []
    for name, cell in cells.iterrows():
        gap = cell.get("meta_train_post", np.nan) - cell.get("meta_test_post", np.nan)
        history = [f"{train_pre.get((name, step), np.nan):.2f}" for step in steps]
        rows.append([name, *[f"{cell[c]:.3f}" for c in present], f"{gap:+.3f}", " / ".join(history)])
    headers = [
        "strategy",
        *[columns[c] for c in present],
        "train−test post",
        f"train pre @ steps {'/'.join(map(str, steps))}",
    ]
    return tabulate(rows, headers=headers, tablefmt="github")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick", help="profile of the benchmark file (quick | paper)")
    parser.add_argument("--benchmark", type=Path, default=BENCHMARK, help="benchmark TOML (default: nme_strategies)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared 2-core machine)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results folder (default: {RESULTS})")
    parser.add_argument("--only", metavar="PATTERN", help="glob on sampler/learner/strategy/seed=N (smoke tests)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()

    started = time.perf_counter()
    options = RunOptions(out=args.out, device=args.device, threads=args.threads, progress=not args.no_progress)
    done = run_benchmark(args.benchmark, profile=args.profile, only=args.only, options=options)
    records, spec = done.records, done.specs[0]

    runs, cells = _cells(records)
    shape = f"{spec.protocol.n_way}-way {spec.protocol.k_shot}-shot"
    print(
        f"\nNME Omniglot {shape}, MAML, profile '{args.profile}': {len(records)} runs ({args.out}); "
        f"{spec.training.meta_steps} meta-steps x {spec.training.meta_batch} tasks, "
        f"{spec.protocol.eval_tasks} fixed test tasks x {spec.protocol.k_query} queries/class"
    )
    for record in records:
        if record["status"] != "ok":
            print(f"  {record['status']}: {record['label']}: {record['error']}")
    if cells.empty:
        print("no successful runs")
        return
    print("\n(a) outer-loop data strategies (MetaMix Table 16 is 20-way 1-shot on the full Omniglot)\n")
    print(table16(runs, cells))
    print("\n(b) beyond the papers: MultiMix, multi-mix and MetaMixUp against query and MetaMix\n")
    print(beyond_papers_table(runs, cells))
    print("\n(c) meta-overfitting diagnostics (means over seeds; accuracy on meta-train / meta-test query sets)\n")
    print(diagnostics_table(records, cells))
    run_seconds = sum(record.get("wall_seconds", 0.0) for record in records)
    print(f"\nrun time in the records: {run_seconds / 60:.1f} min; this call: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
