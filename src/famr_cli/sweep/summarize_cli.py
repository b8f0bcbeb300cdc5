"""Summarise a finished multirun: summary.csv, summary.md and plots in the sweep dir, as every multirun's end does.

    famr-summarize outputs/multirun/2026-11-27/12-00-00             # (re)write the summary files
    famr-summarize outputs/multirun/... --by forget.classes          # mean / worst case over a key
    famr-summarize outputs/multirun/... --compare                    # a method sweep vs Retrain

(``python scripts/summarize.py`` runs the same command.) The default writes what the sweep-summary
callback writes (famr_cli/sweep/) and prints summary.md:
useful for a sweep that was interrupted, or one run before the callback existed. With --by KEY,
rows are grouped over KEY and reduced to mean / worst case. With --compare, one row per job in the
field's terms: UA, RA, TA, forget-test accuracy, MIA-Efficacy, Avg. Gap to Retrain
and RTE (seconds and percent of Retrain's training time). --by and --compare only print.
Every table lists Retrain first and groups the methods by the training data they read (a ``reads`` column
after ``method``; :mod:`famr_cli.method_reads`); a job refused because its method is not defined
for its forget spec says so instead of showing a failure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from famr_cli.method_reads import Reads, group_rank, reads_of_row, refused_cell
from famr_cli.sweep.files import write_summary
from famr_cli.sweep.jobs import Job, forget_spec_of, job_method
from famr_cli.sweep.jobs import load_jobs as load_sweep_jobs
from famr_cli.sweep.summary import SUMMARY_MD

FIGURES = [
    ("forget_test", lambda r: r["metrics"]["unlearned"]["forget_test_acc"]),
    ("retain_test", lambda r: r["metrics"]["unlearned"]["retain_test_acc"]),
    ("d_retain", lambda r: r["metrics"]["unlearned"]["retain_test_acc"] - r["metrics"]["original"]["retain_test_acc"]),
    ("unlearn_s", lambda r: r["timing"]["unlearn_s"]),
]


def load_jobs(sweep_dir: Path) -> list[Job]:
    """Every job that wrote a results.json."""
    return [job for job in load_sweep_jobs(sweep_dir) if job.results is not None]


def _reads(job: Job) -> Reads:
    """What the job's method reads: from the config it ran, else its option's YAML."""
    return reads_of_row(job_method(job), ((job.results or {}).get("config") or {}).get("method"))


def _by_reads(jobs: list[Job]) -> list[Job]:
    """Retrain first, then the jobs grouped by the data their method reads, in job order within a group."""
    return sorted(jobs, key=lambda job: group_rank(job_method(job), _reads(job)))


def figure(results: dict, fn) -> float | None:
    if results.get("status") != "ok":
        return None
    value = fn(results)
    return None if value is None else float(value)


def fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def table(jobs: list[Job], by: str | None) -> str:
    # Overrides that every job shares (e.g. progress=false) are not what the sweep varied.
    varied = {k for job in jobs for k in job.overrides if len({j.overrides.get(k) for j in jobs}) > 1}
    keys = sorted(varied - {by})
    # A sweep over the method: Retrain first, then the methods by the data they read, in a reads column after method.
    if "method" in keys:
        keys.insert(keys.index("method") + 1, "reads")
        jobs = _by_reads(jobs)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for job in jobs:
        groups[tuple(_reads(job).label if k == "reads" else job.overrides.get(k, "") for k in keys)].append(job.results)
    if by:
        head = keys + ["jobs", "forget_test mean", "forget_test max", "d_retain mean", "d_retain worst", "status"]
    else:
        head = keys + [name for name, _ in FIGURES] + ["status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group_key, members in groups.items():
        if by:
            forget = [v for v in (figure(r, FIGURES[0][1]) for r in members) if v is not None]
            drop = [v for v in (figure(r, FIGURES[2][1]) for r in members) if v is not None]
            ok = sum(r.get("status") == "ok" for r in members)
            cells = [
                str(len(members)),
                fmt(statistics.mean(forget) if forget else None),
                fmt(max(forget) if forget else None),
                fmt(statistics.mean(drop) if drop else None),
                fmt(min(drop) if drop else None),
                f"{ok}/{len(members)} ok",
            ]
            lines.append("| " + " | ".join([*group_key, *cells]) + " |")
        else:
            for results in members:
                cells = [fmt(figure(results, fn)) for _, fn in FIGURES] + [results.get("status", "?")]
                lines.append("| " + " | ".join([*group_key, *cells]) + " |")
    return "\n".join(lines)


COMPARE = [
    ("UA", lambda u, r: u.get("UA")),
    ("RA", lambda u, r: u.get("RA")),
    ("TA", lambda u, r: u.get("TA")),
    ("forget-test acc", lambda u, r: u.get("forget_test_acc")),
    ("MIA-Efficacy", lambda u, r: u.get("mia_efficacy")),
    ("Avg. Gap", lambda u, r: (r.get("gaps") or {}).get("avg_gap")),
    ("RTE s", lambda u, r: r["timing"]["unlearn_s"]),
    ("RTE % of Retrain", lambda u, r: None if r["timing"].get("rte_frac_of_retrain") is None else 100 * r["timing"]["rte_frac_of_retrain"]),
]


def compare_table(jobs: list[Job]) -> str:
    head = ["method", "reads", *(name for name, _ in COMPARE)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for job in _by_reads(jobs):
        results, reads = job.results, _reads(job)
        # A FAMR run that changed FAMR's definition says what it changed instead of "famr".
        name = job_method(job)
        if results.get("status") != "ok":
            why = reads.refusal(forget_spec_of([job]))
            cells = (
                [refused_cell(why), *(["–"] * (len(COMPARE) - 1))] if why else [*(["–"] * (len(COMPARE) - 1)), results.get("status", "?")]
            )
            lines.append("| " + " | ".join([name, reads.label, *cells]) + " |")
            continue
        unlearned = results["metrics"]["unlearned"]
        cells = [fmt(None if (v := fn(unlearned, results)) is None else float(v)) for _, fn in COMPARE]
        lines.append("| " + " | ".join([name, reads.label, *cells]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--by", help="override key to aggregate over (mean and worst case)")
    parser.add_argument("--compare", action="store_true", help="methods vs Retrain: UA, RA, TA, MIA, Avg. Gap, RTE")
    parser.add_argument("--no-plots", action="store_true", help="write summary.csv and summary.md only")
    args = parser.parse_args(argv)
    jobs = load_jobs(args.sweep_dir)
    if not jobs:
        print(f"No */results.json under {args.sweep_dir}; pass the multirun directory Hydra printed.", file=sys.stderr)
        return 2
    if args.compare or args.by:
        print(compare_table(jobs) if args.compare else table(jobs, args.by))
        return 0
    summary, written = write_summary(args.sweep_dir, plots=not args.no_plots)
    print((args.sweep_dir / SUMMARY_MD).read_text(), end="")
    print("Wrote " + ", ".join(path.name for path in written) + f" in {args.sweep_dir}", file=sys.stderr)
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
