"""The leaderboard as tables for papers: ``leaderboard.tex`` (LaTeX, booktabs) and ``leaderboard.html`` (one
self-contained page, plots embedded), written beside ``LEADERBOARD.md`` from the cells table of
:func:`metabench.leaderboard.aggregate` with the same conventions: mean ± 95% CI over tasks, best in bold (here per
benchmark, profile and sampler), Δ against the same learner's plain strategy (``Strategy.plain``, e.g. ``query``) with
its paired-test p-value."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from metabench import leaderboard, results
from metabench.statistics import SIGNIFICANCE

FORMATS = {"latex": "leaderboard.tex", "html": "leaderboard.html"}
GROUP = ["benchmark", "profile", "sampler"]


def marks(p_value: float) -> str:
    """Significance of Δ: ``**`` for p < 0.01, ``*`` for p < ``SIGNIFICANCE``, nothing otherwise."""
    if p_value is None or np.isnan(p_value):
        return ""
    return "**" if p_value < 0.01 else "*" if p_value < SIGNIFICANCE else ""


def _best(group: pd.DataFrame) -> pd.Series:
    signed = leaderboard.signed_mean(group)
    return signed == signed.max()


def _groups(cells: pd.DataFrame) -> Iterator[tuple[tuple[str, str], pd.DataFrame]]:
    """Per benchmark and profile, its cells ordered by sampler then rank, with a ``best`` column."""
    cells = cells.assign(best=False)
    for _, group in cells.groupby(GROUP, sort=True):
        cells.loc[group.index, "best"] = _best(group)
    for key, group in cells.groupby(["benchmark", "profile"], sort=True):
        yield key, group.sort_values(["sampler", "rank"], kind="stable")


_LATEX_SPECIALS = {c: f"\\{c}" for c in "&%$#_{}"} | {"~": "\\textasciitilde{}", "^": "\\textasciicircum{}"}
_LATEX_SPECIALS["\\"] = "\\textbackslash{}"


def latex_escape(text: str) -> str:
    return re.sub(r"[&%$#_{}~^\\]", lambda m: _LATEX_SPECIALS[m.group()], str(text))


def render_latex(cells: pd.DataFrame) -> str:
    """One booktabs ``table`` per benchmark and profile; a row per cell, samplers separated by a rule."""
    parts = [
        f"% metabench leaderboard, generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; needs \\usepackage{{booktabs}}",
        "% mean +- 95% CI over the fixed evaluation tasks; best per sampler in bold; "
        "Delta vs the plain strategy of the same learner (paired t-test over tasks): "
        f"* p < {SIGNIFICANCE}, ** p < 0.01",
    ]
    for (benchmark, profile), group in _groups(cells):
        scale, unit = leaderboard.metric_display(group)
        unit = latex_escape(unit)
        title = latex_escape(benchmark) + ("" if profile == "-" else f" (profile {latex_escape(profile)})")
        label = re.sub(r"[^A-Za-z0-9]+", "-", benchmark if profile == "-" else f"{benchmark}-{profile}").strip("-")
        parts += [
            "",
            "\\begin{table}[t]",
            "\\centering",
            f"\\caption{{{title}: {unit}, mean $\\pm$ 95\\% CI "
            "over tasks; best per sampler in bold; $\\Delta$ vs.\\ the plain strategy, "
            f"$^{{*}}p<{SIGNIFICANCE}$, $^{{**}}p<0.01$ (paired $t$-test).}}",
            f"\\label{{tab:{label}}}",
            "\\begin{tabular}{lllrrr}",
            "\\toprule",
            "Sampler & Learner & Strategy & Score & $\\Delta$ & Seeds \\\\",
            "\\midrule",
        ]
        previous = None
        for cell in group.itertuples():
            if previous is not None and cell.sampler != previous:
                parts.append("\\midrule")
            previous = cell.sampler
            score = f"{cell.mean * scale:.2f} $\\pm$ {cell.ci95_tasks * scale:.2f}"
            if cell.best:
                score = f"\\textbf{{{score}}}"
            delta = ""
            if not np.isnan(cell.delta):
                mark = marks(cell.p_value)
                delta = f"{cell.delta * scale:+.2f}" + (f"$^{{{mark}}}$" if mark else "")
            strategy = f"{cell.strategy} ({cell.variant})" if getattr(cell, "variant", "") else cell.strategy
            names = " & ".join(latex_escape(v) for v in (cell.sampler, cell.learner, strategy))
            parts.append(f"{names} & {score} & {delta} & {cell.seeds} \\\\")
        parts += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(parts) + "\n"


def _png(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def render_html(cells: pd.DataFrame, out: Path) -> str:
    """One page readable offline: a table per benchmark and profile with each cell's curves, the leaderboard plot
    (the PNGs under ``out`` that :func:`metabench.leaderboard.write_leaderboard` wrote), embedded as base64."""
    body = [
        "<h1>metabench leaderboard</h1>",
        f"<p>Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Mean ± 95% CI over the fixed evaluation tasks "
        "(compared only where identical); best per sampler in bold. Δ: against the same sampler and learner with its "
        "plain strategy (the published algorithm's outer loss), paired t-test over tasks: * p &lt; "
        f"{SIGNIFICANCE}, ** p &lt; 0.01.</p>",
    ]
    for (benchmark, profile), group in _groups(cells):
        scale, unit = leaderboard.metric_display(group)
        title = html.escape(benchmark) + ("" if profile == "-" else f" <small>(profile {html.escape(profile)})</small>")
        body.append(f"<h2>{title}</h2>")
        rows, curves = [], []
        for cell in group.itertuples():
            score = f"{cell.mean * scale:.2f} ± {cell.ci95_tasks * scale:.2f}"
            delta = "" if np.isnan(cell.delta) else f"{cell.delta * scale:+.2f}{marks(cell.p_value)}"
            p_value = "" if np.isnan(cell.p_value) else f"{cell.p_value:.3g}"
            strategy = f"{cell.strategy} ({cell.variant})" if getattr(cell, "variant", "") else cell.strategy
            cols = [cell.sampler, cell.learner, strategy]
            plot = out / "plots" / f"{cell.plot_hash}.png" if isinstance(cell.plot_hash, str) else None
            if plot and plot.exists():
                curves.append(f"<figure>{_png(plot)}<figcaption>{html.escape('/'.join(cols))}</figcaption></figure>")
            rows.append(
                "<tr>"
                + "".join(f"<td>{html.escape(str(v))}</td>" for v in cols)
                + f'<td class="num{" best" if cell.best else ""}">{score}</td>'
                + f'<td class="num">{delta}</td><td class="num">{p_value}</td><td class="num">{cell.seeds}</td></tr>'
            )
        headers = ["sampler", "learner", "strategy", html.escape(unit), "Δ", "p", "seeds"]
        body.append(
            "<table><thead><tr>"
            + "".join(f"<th>{h}</th>" for h in headers)
            + "</tr></thead><tbody>"
            + "".join(rows)
            + "</tbody></table>"
        )
        if curves:
            body += ["<h3>Training curves (first seed of each cell)</h3>", '<div class="curves">', *curves, "</div>"]
    if (out / "leaderboard.png").exists():
        body += ["<h2>All cells</h2>", _png(out / "leaderboard.png")]
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}th,td{padding:.3em .8em;border-bottom:1px solid #ddd}"
        "th{border-bottom:2px solid #444;text-align:left}.num{text-align:right;font-variant-numeric:tabular-nums}"
        ".best{font-weight:bold}img{max-width:100%}.curves{display:flex;flex-wrap:wrap;gap:1em}"
        "figure{margin:0;width:30em}figcaption{text-align:center;font-size:.9em}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>metabench leaderboard</title>'
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write(out: Path, fmt: str) -> Path:
    """Write ``leaderboard.tex`` or ``leaderboard.html`` under ``out`` from its run records; returns the path."""
    runs = leaderboard.runs_frame(results.load_records(out))
    cells = leaderboard.aggregate(runs) if len(runs) else pd.DataFrame()
    path = out / FORMATS[fmt]
    if cells.empty:
        text = "% no successful runs yet\n" if fmt == "latex" else "<!DOCTYPE html><p>No successful runs yet.</p>\n"
    else:
        text = render_latex(cells) if fmt == "latex" else render_html(cells, out)
    results.atomic_write(path, lambda handle: handle.write(text))
    return path
