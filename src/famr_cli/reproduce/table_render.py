"""The comparison tables as Markdown, CSV and LaTeX: the mean ± std cells, the reads, n and trials columns,
the † footnotes of failed or missing jobs, and LaTeX escaping.

A method table's reads column follows the method's name in Markdown and LaTeX (LaTeX also rules off each
group); the CSV adds ``reads`` and ``refused`` as its last columns, so the earlier ones keep their places."""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING

from famr_cli.method_reads import group_rank, refused_cell
from famr_cli.reproduce.table_columns import DAGGER, HIGHLIGHT, MISSING, ROBUSTNESS_METRICS, latex_escape

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


def _reads(table: Table, row: Row) -> list[str]:
    """The reads cell of a method table's row (none in the λ table)."""
    return [row.reads.label if row.reads else MISSING] if table.grouped else []


def _figures(table: Table, row: Row, planned: int) -> list[str]:
    """The metric, n and trials cells; a method not defined for the table's forget spec says why instead."""
    if row.refused:
        return [refused_cell(row.refused), *[MISSING] * (len(table.metrics) + 1)]
    return [*(fmt_cell(row.stats.get(m.key), planned) for m in table.metrics), _n_cell(row, planned), row.trials]


def to_markdown(table: Table) -> str:
    planned = len(table.seeds)
    head = [table.kind, *(["reads"] if table.grouped else []), *(m.header for m in table.metrics), "n", "trials"]
    lines = [f"**{table.caption()}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table.rows:
        label = f"**{row.label}**" if row.key == HIGHLIGHT else row.label
        label += f" {DAGGER}" if row.failures else ""
        lines.append("| " + " | ".join([label, *_reads(table, row), *_figures(table, row, planned)]) + " |")
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
    writer.writerow([*head, "seeds", "devices", "trials", *(["reads", "refused"] if table.grouped else [])])
    for row in table.rows:
        cells: list[str] = [table.experiment, row.key, row.label, str(row.n), str(len(row.failures))]
        for m in table.metrics:
            stat = row.stats.get(m.key)
            cells += [_csv_number(stat.mean if stat else None), _csv_number(stat.std if stat else None)]
        cells += [";".join("?" if s is None else str(s) for s in row.seeds), ";".join(table.devices), row.trials]
        if table.grouped:
            cells += [row.reads.label if row.reads else "", row.refused or ""]
        writer.writerow(cells)
    return out.getvalue()


def _rank(row: Row) -> int:
    return group_rank(row.key, row.reads) if row.reads else 0


# The reads labels in LaTeX: the sets in math mode.
LATEX_READS = {"D_f only": r"$D_f$ only", "D_f + D_r": r"$D_f + D_r$", "D_r only": r"$D_r$ only", "all of D": r"all of $D$"}


def _latex_row(table: Table, row: Row, planned: int) -> list[str]:
    label = rf"\textbf{{{row.latex_label}}}" if row.key == HIGHLIGHT else row.latex_label
    label += r"$^\dagger$" if row.failures else ""
    reads = [LATEX_READS.get(cell, latex_escape(cell)) for cell in _reads(table, row)]
    if row.refused:  # one cell across the figures: the reason
        span = len(table.metrics) + 2
        return [label, *reads, rf"\multicolumn{{{span}}}{{l}}{{{latex_escape(refused_cell(row.refused))}}}"]
    return [label, *reads, *(latex_escape(cell) for cell in _figures(table, row, planned))]


def to_latex(table: Table) -> str:
    planned = len(table.seeds)
    head = [table.kind.capitalize() if table.kind != "λ" else r"$\lambda$", *(["Reads"] if table.grouped else [])]
    head += [*(m.latex for m in table.metrics), "$n$", "Trials"]
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
        r"\begin{tabular}{l" + ("l" if table.grouped else "") + "r" * (len(table.metrics) + 2) + "}",
        r"\toprule",
        " & ".join(head) + r" \\",
        r"\midrule",
    ]
    for before, row in zip([None, *table.rows], table.rows):
        if table.grouped and before is not None and _rank(before) != _rank(row):
            lines.append(r"\midrule")  # a rule between the groups of methods reading the same data
        lines.append(" & ".join(_latex_row(table, row, planned)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    notes = _footnotes(table)
    if notes:
        lines.append(r"\par\footnotesize " + r" \\ ".join(r"$^\dagger$ " + latex_escape(n) for n in notes))
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
