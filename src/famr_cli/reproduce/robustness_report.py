"""Every robustness check of one or more sweeps as one Markdown table: the original and Retrain (from the
first job), then one row per job, each check's figure and, in brackets, its excess over Retrain.

    famr-run -m experiment=cifar10_cpu method=famr,finetune,random_label,salun,scrub hydra.sweep.dir=outputs/rob/methods
    famr-run -m experiment=cifar10_cpu method=famr method.head_only=true,false hydra.sweep.dir=outputs/rob/head
    famr-robustness outputs/rob/methods outputs/rob/head

Definitions: docs/robustness.md. Rows are labelled by the overrides their jobs varied and, like every famr
table, grouped by the training data their method reads (the ``reads`` column; Retrain's row reads D_r only).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from famr_cli.method_reads import REFERENCE, group_rank, reads_of_option, reads_of_row
from famr_cli.robustness_figures import COMPARISONS, CheckFigure, check_figures
from famr_cli.sweep.jobs import Job, job_method, load_jobs, varied_keys


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.2f}"


def row(label: str, reads: str, figures: dict[str, Any], vs: dict[str, Any], cols: list[CheckFigure]) -> str:
    cells = []
    for figure in cols:
        more = figure.excess_value(vs)
        cells.append(_fmt(figure.value(figures)) + (f" ({more:+.2f})" if more is not None else ""))
    cells += [_fmt(c.value(vs)) for c in COMPARISONS]
    return f"| {label} | {reads} | " + " | ".join(cells) + " |"


def reads_of_job(job: Job) -> tuple[int, str]:
    """The job's group rank and reads label, from the method config it ran."""
    reads = reads_of_row(job_method(job), ((job.results or {}).get("config") or {}).get("method"))
    return group_rank(job_method(job), reads), reads.label


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", type=Path)
    parser.add_argument("--k", type=int, default=5, help="the relearning k to show (one of evaluate.robustness.relearn.shots)")
    args = parser.parse_args(argv)
    jobs = [job for sweep in args.sweeps for job in load_jobs(sweep) if job.ok and (job.results or {}).get("robustness")]
    if not jobs:
        print("No finished job with robustness figures under " + ", ".join(map(str, args.sweeps)), file=sys.stderr)
        return 1
    cols = check_figures(args.k)
    head = ["model", "reads", *(f.header for f in cols), *(c.label for c in COMPARISONS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    first = jobs[0].results["robustness"]
    # The original model is no unlearning method: nothing to group it by.
    fixed = {"original": "–", "retrain": reads_of_option(REFERENCE).label}
    for name in ("original", "retrain"):
        if name in first:
            lines.append(row(name.capitalize(), fixed[name], first[name], {}, cols))
    keys = varied_keys(jobs)
    ranked = {job.dir: reads_of_job(job) for job in jobs}
    for job in sorted(jobs, key=lambda j: ranked[j.dir][0]):
        rob = job.results["robustness"]
        vs = rob.get("vs_retrain") or {}
        label = ", ".join(f"{k}={v}" for k in keys if (v := job.overrides.get(k)) is not None) or job.results.get("method", job.dir.name)
        lines.append(row(label, ranked[job.dir][1], rob["unlearned"], vs, cols))
    print(f"Accuracies in %, k = {args.k} images per forgotten class; (±x) = excess over Retrain under the identical check.")
    print(f"Forgotten images: {first['sets'].get('forget')}; attack images: {first['sets'].get('pool')}.\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
