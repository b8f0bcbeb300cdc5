"""The comparison tables as Markdown, CSV and LaTeX: the mean ± std cells, the n and trials columns,
the † footnotes of failed or missing jobs, and LaTeX escaping."""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING

from famr_cli.reproduce.table_columns import DAGGER, HIGHLIGHT, MISSING, ROBUSTNESS_METRICS

if TYPE_CHECKING:
    from famr_cli.reproduce.tables import Row, Stat, Table


def fmt_cell(stat: Stat | None, planned: int, pm: str = " ± ") -> str:
    if stat is None:
        return MISSING
    text = f"{stat.mean:.2f}" if stat.std is None else f"{stat.mean:.2f}{pm}{stat.std:.2f}"
    return text if stat.n == planned or planned <= 1 else f"{text} (n={stat.n})"


def _n_cell(row: Row, planned: int) -> str:
    return str(row.n) if row.n == planned or not planned else f"{row.n} of {planned}"


def _footnotes(table: Table) -> list[str]:
    notes = []
    for row in table.rows:
        for f in row.failures:
            seed = "seed ?" if f.seed is None else f"seed {f.seed}"
            notes.append(f"{row.label}, {seed}: {f.status}" + (f" ({f.error})" if f.error else ""))
    return notes


def to_markdown(table: Table) -> str:
    planned = len(table.seeds)
    head = [table.kind, *(m.header for m in table.metrics), "n", "trials"]
    lines = [f"**{table.caption()}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table.rows:
        label = f"**{row.label}**" if row.key == HIGHLIGHT else row.label
        label += f" {DAGGER}" if row.failures else ""
        cells = [fmt_cell(row.stats.get(m.key), planned) for m in table.metrics]
        lines.append("| " + " | ".join([label, *cells, _n_cell(row, planned), row.trials]) + " |")
    notes = _footnotes(table)
    if notes:
        lines += ["", *(f"{DAGGER} {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def _csv_number(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def to_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    head = ["experiment", table.kind if table.kind != "λ" else "lam", "name", "n", "failed"]
    for m in table.metrics:
        head += [f"{m.key}_mean", f"{m.key}_std"]
    writer.writerow([*head, "seeds", "devices", "trials"])
    for row in table.rows:
        cells: list[str] = [table.experiment, row.key, row.label, str(row.n), str(len(row.failures))]
        for m in table.metrics:
            stat = row.stats.get(m.key)
            cells += [_csv_number(stat.mean if stat else None), _csv_number(stat.std if stat else None)]
        cells += [";".join("?" if s is None else str(s) for s in row.seeds), ";".join(table.devices), row.trials]
        writer.writerow(cells)
    return out.getvalue()


LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "λ": r"$\lambda$",
    "–": "--",
    DAGGER: r"$^\dagger$",
}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(c, c) for c in text)


def to_latex(table: Table) -> str:
    planned = len(table.seeds)
    head = [table.kind.capitalize() if table.kind != "λ" else r"$\lambda$", *(m.latex for m in table.metrics), "$n$", "Trials"]
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{" + latex_escape(table.caption()) + "}",
        r"\label{tab:"
        + table.experiment.replace("_", "-")
        + ("-lambda" if table.kind == "λ" else "")
        + ("-sample" if "sample" in table.title else "")
        + ("-forgotten" if table.metrics is ROBUSTNESS_METRICS else "")
        + "}",
        r"\begin{tabular}{l" + "r" * (len(table.metrics) + 2) + "}",
        r"\toprule",
        " & ".join(head) + r" \\",
        r"\midrule",
    ]
    for row in table.rows:
        label = rf"\textbf{{{row.latex_label}}}" if row.key == HIGHLIGHT else row.latex_label
        label += r"$^\dagger$" if row.failures else ""
        cells = [latex_escape(fmt_cell(row.stats.get(m.key), planned, pm=" ± ")) for m in table.metrics]
        lines.append(" & ".join([label, *cells, latex_escape(_n_cell(row, planned)), latex_escape(row.trials)]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    notes = _footnotes(table)
    if notes:
        lines.append(r"\par\footnotesize " + r" \\ ".join(r"$^\dagger$ " + latex_escape(n) for n in notes))
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
