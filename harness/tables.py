"""The leaderboard as tables for papers: ``leaderboard.tex`` (LaTeX, booktabs) and ``leaderboard.html`` (one
self-contained page, plots embedded), written beside ``LEADERBOARD.md`` from the cells table of
:func:`metabench.leaderboard.aggregate` and shown as :func:`metabench.leaderboard.shown` says (the same CIs, bolding,
Δs and verdicts as the Markdown table, the same caption); rows recorded by other code are marked stale."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from metabench import leaderboard, results
from metabench.registry import Registry

FORMATS = {"latex": "leaderboard.tex", "html": "leaderboard.html"}


def _groups(cells: pd.DataFrame, first: str | None) -> Iterator[tuple[str, str, str, pd.DataFrame]]:
    """Per table (benchmark ``first`` first): its benchmark, the rest of its title, its scale line and its cells, by
    sampler then rank."""
    for (benchmark, profile, overrides), group in leaderboard.table_groups(cells, first):
        named = ", ".join(leaderboard.title_parts(profile, overrides))
        yield benchmark, named, group["scale"].iloc[0], group.sort_values(["sampler", "rank"], kind="stable")


_LATEX_SPECIALS = {c: f"\\{c}" for c in "&%$#_{}"} | {"~": "\\textasciitilde{}", "^": "\\textasciicircum{}"}
_LATEX_SPECIALS["\\"] = "\\textbackslash{}"


def _as_of(cells: pd.DataFrame) -> str:
    return leaderboard.as_of(cells.get("last_started", pd.Series(dtype=object)))


def latex_escape(text: str) -> str:
    return re.sub(r"[&%$#_{}~^\\]", lambda m: _LATEX_SPECIALS[m.group()], str(text))


def render_latex(cells: pd.DataFrame, first: str | None = None) -> str:
    """One booktabs ``table`` per table of the leaderboard; a row per cell, samplers separated by a rule."""
    parts = [
        f"% metabench leaderboard, records: {_as_of(cells)}; needs \\usepackage{{booktabs}}",
    ]
    for benchmark, named, size, group in _groups(cells, first):
        scale, unit = leaderboard.metric_display(group)
        title = latex_escape(benchmark) + (f" ({latex_escape(named)})" if named else "")
        # "tab:omniglot-5w1s-quick", as before tables had overrides: a paper's \ref keeps working
        label = re.sub(r"[^A-Za-z0-9]+", "-", f"{benchmark}-{named.removeprefix('profile ')}").strip("-")
        stale = " $^\\dagger$: recorded by other code than the one installed now." if group["stale"].any() else ""
        parts += [
            "",
            "\\begin{table}[t]",
            "\\centering",
            f"\\caption{{{title}: {latex_escape(unit)}. {latex_escape(size)} "
            f"{latex_escape(leaderboard.verdict_caption(group))}{stale}}}",
            f"\\label{{tab:{label}}}",
            "\\begin{tabular}{lllrrlr}",
            "\\toprule",
            "Sampler & Learner & Strategy & Score & $\\Delta$ & Verdict & Seeds \\\\",
            "\\midrule",
        ]
        previous = None
        for cell in group.itertuples():
            if previous is not None and cell.sampler != previous:
                parts.append("\\midrule")
            previous = cell.sampler
            show = leaderboard.shown(cell, scale)
            score = show.score + (f" $\\pm$ {show.ci[2:]}" if show.ci else "")
            if show.bold:
                score = f"\\textbf{{{score}}}"
            delta = latex_escape(show.delta) + (f" {latex_escape(show.delta_ci)}" if show.delta_ci else "")
            strategy = f"{cell.strategy} ({cell.variant})" if cell.variant else cell.strategy
            names = " & ".join(latex_escape(v) for v in (cell.sampler, cell.learner, strategy))
            mark = "$^\\dagger$" if cell.stale else ""
            verdict = latex_escape(show.verdict.split(" (")[0])
            parts.append(f"{names}{mark} & {score} & {delta} & {verdict} & {cell.seeds} \\\\")
        parts += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(parts) + "\n"


def _png(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def render_html(cells: pd.DataFrame, out: Path, first: str | None = None) -> str:
    """One page readable offline: a table per benchmark and profile with each cell's curves, the leaderboard plot
    (the PNGs under ``out`` that :func:`metabench.leaderboard.write_leaderboard` wrote), embedded as base64."""
    body = [
        "<h1>metabench leaderboard</h1>",
        f"<p>Records: {html.escape(_as_of(cells))}.</p>",
    ]
    for benchmark, named, size, group in _groups(cells, first):
        scale, unit = leaderboard.metric_display(group)
        title = html.escape(benchmark) + (f" <small>({html.escape(named)})</small>" if named else "")
        body.append(f"<h2>{title}</h2>")
        if size:
            body.append(f'<p class="scale">{html.escape(size)}</p>')
        body.append(f"<p>{html.escape(leaderboard.verdict_caption(group))}</p>")
        rows, curves = [], []
        for cell in group.itertuples():
            show = leaderboard.shown(cell, scale)
            p_value = "" if pd.isna(cell.p_value) else f"{cell.p_value:.3g}"
            strategy = f"{cell.strategy} ({cell.variant})" if cell.variant else cell.strategy
            cols = [cell.sampler, cell.learner, strategy]
            plot = out / "plots" / f"{cell.plot_hash}.png" if isinstance(cell.plot_hash, str) else None
            if plot and plot.exists():
                curves.append(f"<figure>{_png(plot)}<figcaption>{html.escape('/'.join(cols))}</figcaption></figure>")
            numbers = [f"{show.score} {show.ci}".strip(), show.delta, show.delta_ci, p_value, str(cell.seeds)]
            rows.append(
                "<tr>"
                + "".join(f"<td>{html.escape(str(v))}</td>" for v in cols)
                + f'<td class="num{" best" if show.bold else ""}">{html.escape(numbers[0])}</td>'
                + "".join(f'<td class="num">{html.escape(v)}</td>' for v in numbers[1:])
                + f"<td>{html.escape(show.verdict)}</td><td>{'stale' if cell.stale else ''}</td></tr>"
            )
        headers = ["sampler", "learner", "strategy", html.escape(unit), "Δ", "Δ CI", "p", "seeds", "verdict", "note"]
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


def write(out: Path, fmt: str, registry: Registry | None = None, first: str | None = None) -> Path:
    """Write ``leaderboard.tex`` or ``leaderboard.html`` under ``out`` from its run records (with ``registry``, stale
    rows marked; benchmark ``first`` first); returns the path."""
    runs = leaderboard.runs_frame(results.load_records(out), registry)
    cells = leaderboard.aggregate(runs) if len(runs) else pd.DataFrame()
    path = out / FORMATS[fmt]
    if cells.empty:
        text = "% no successful runs yet\n" if fmt == "latex" else "<!DOCTYPE html><p>No successful runs yet.</p>\n"
    else:
        text = render_latex(cells, first) if fmt == "latex" else render_html(cells, out, first)
    results.atomic_write(path, lambda handle: handle.write(text))
    return path
