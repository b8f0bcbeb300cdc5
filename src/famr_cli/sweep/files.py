"""Writes a sweep's files: summary.csv and summary.md (:mod:`famr_cli.sweep.summary`) and, when asked, the
PNG plots (:mod:`famr_cli.sweep.plots`), which alone load matplotlib."""

from __future__ import annotations

from pathlib import Path

from famr_cli.sweep.summary import SUMMARY_CSV, SUMMARY_MD, SweepSummary, summarize, to_csv, to_markdown


def write_summary(sweep_dir: str | Path, plots: bool = True) -> tuple[SweepSummary, list[Path]]:
    """Write summary.csv, summary.md and (with ``plots``) the PNG plots into ``sweep_dir``; returns the files."""
    summary = summarize(sweep_dir)
    written = []
    for name, text in ((SUMMARY_CSV, to_csv(summary)), (SUMMARY_MD, to_markdown(summary))):
        path = summary.sweep_dir / name
        path.write_text(text)
        written.append(path)
    if plots:
        from famr_cli.sweep.plots import write_plots  # matplotlib loads only when plots are asked for

        written += write_plots(summary)
    return summary, written
