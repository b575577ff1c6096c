"""LASIUM reproduction (Khodadadeh et al., ICLR 2021, Table 1 / Table 7): Omniglot 5-way 1-shot.

Runs ``benchmarks/lasium.toml`` (LASIUM-N, -RO, -OC meta-training tasks from a generator trained without labels,
against supervised meta-training and training from scratch, all on the same fixed real test tasks) and prints the
measured accuracy beside the paper's. Finished runs are read back, not rerun (results in ``--out``).

    python benchmarks/repro_lasium.py [--profile quick|paper] [--device cpu] [--out results] [--only PATTERN]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tabulate import tabulate

from metabench import inference
from metabench.benchmark import run_benchmark
from metabench.cache import cache_dir
from metabench.runner import RunOptions

BENCHMARK = Path(__file__).with_name("lasium.toml")

# Omniglot 5-way 1-shot, K_val = 15 at evaluation, 1000 tasks: paper Table 1, or Table 7 ("T7": the ablation stopped
# after 1000 meta-iterations, sigma^2 = 0.5 / alpha = 0.2).
PAPER = {
    ("standard", "maml"): "94.46 ± 0.35 (supervised MAML)",
    ("standard", "protonet"): "98.35 ± 0.22 (supervised ProtoNets)",
    ("lasium-n", "maml"): "76.11 ± 0.64 (VAE); 77.16 ± 0.65 (GAN, T7)",
    ("lasium-n", "protonet"): "61.57 ± 0.80 (VAE, T7); 62.16 ± 0.79 (GAN, T7)",
    ("lasium-ro", "maml"): "83.26 ± 0.55 (GAN); 75.02 ± 0.66 (VAE, T7)",
    ("lasium-ro", "protonet"): "80.15 ± 0.64 (GAN); 62.17 ± 0.80 (VAE, T7)",
    ("lasium-oc", "maml"): "74.98 ± 0.67 (VAE, T7); 74.70 ± 0.68 (GAN, T7)",
    ("lasium-oc", "protonet"): "73.22 ± 0.73 (VAE); 61.79 ± 0.79 (GAN, T7)",
    ("*", "scratch"): "51.64 ± 0.65 (training from scratch)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", type=Path, default=BENCHMARK, help="benchmark file (default: benchmarks/lasium.toml)")
    parser.add_argument("--profile", default="quick", help="profile of the benchmark file (quick | paper)")
    parser.add_argument("--only", metavar="PATTERN", help="glob on sampler/learner/strategy/seed=N, or on one part")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared 2-core machine)")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()

    started = time.perf_counter()
    options = RunOptions(out=args.out, device=args.device, threads=args.threads, progress=not args.no_progress)
    records = run_benchmark(args.file, profile=args.profile, only=args.only, options=options).records

    rows = []
    cells: dict[tuple[str, str], list[dict]] = {}
    for record in records:
        config = record["config"]
        cells.setdefault((config["sampler"]["name"], config["learner"]["name"]), []).append(record)
    for (sampler, learner), runs in cells.items():
        paper = PAPER.get((sampler, learner)) or PAPER.get(("*", learner), "")
        ok = [r for r in runs if r["status"] == "ok"]
        if not ok:
            rows.append([sampler, learner, f"{runs[0]['status']}: {runs[0]['error']}", "", paper])
            continue
        cell = inference.summarize_cell([100 * r["metrics"]["test"]["mean"] for r in ok])
        score = f"{cell.mean:.2f}" + (f" ± {cell.ci95:.2f}" if cell.n_seeds > 1 else "") + f" ({cell.n_seeds} seeds)"
        seconds = sum(r.get("wall_seconds", 0.0) for r in ok)
        rows.append([sampler, learner, score, f"{seconds:.0f}", paper])
    print(f"\nLASIUM, Omniglot 5-way 1-shot, profile '{args.profile}' ({len(records)} runs, {args.out}):")
    headers = ["tasks from", "learner", "test accuracy % (95% t CI over seeds)", "run s", "paper"]
    print(tabulate(rows, headers=headers))
    generators = sorted((cache_dir() / "generators").glob("*.json"), key=lambda path: path.stat().st_mtime)
    for path in generators[-3:]:
        entry = json.loads(path.read_text())
        curve = entry["curve"]
        print(
            f"generator {entry['name']}: {len(curve)} epochs in {entry['train_seconds']} s, loss {curve[0]:.3g} -> "
            f"{curve[-1]:.3g} ({path.name})"
        )
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
