"""A sweep's summary: one row per job (what it varied, how it did), written as summary.csv and summary.md.

Rows list Retrain first, then the jobs grouped by the training data their method reads
(:mod:`famr_cli.method_reads`), in job order within a group; the ``reads`` column names it
(after ``method`` in summary.md, last in summary.csv so that the earlier columns keep their places).

The headline pair is the one a λ sweep trades off: accuracy on what should be forgotten and on what
should be kept. For class forgetting that is forgotten-class vs retained-class *test* accuracy; a
sample spec has no forgotten test images, so its forget figure is the forget set's own accuracy.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from famr_cli.method_reads import Reads, group_rank, reads_of_row, refused_cell
from famr_cli.sweep.jobs import Job, forget_spec_of, job_method, load_jobs, varied_keys

SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"


def _under(section: tuple[str, ...], *keys: str) -> list[tuple[str, tuple[str, ...]]]:
    """Columns named after their keys in ``section`` of results.json."""
    return [(key, (*section, key)) for key in keys]


# (column, where in results.json); every one is a percentage or seconds, rounded alike in the Markdown.
FIGURES: list[tuple[str, tuple[str, ...]]] = [
    *_under(
        ("metrics", "unlearned"), "forget_test_acc", "retain_test_acc", "test_acc", "forget_train_acc", "UA", "RA", "TA", "mia_efficacy"
    ),
    *_under(("gaps",), "avg_gap"),
    *_under(("timing",), "unlearn_s", "eval_s"),
    ("rte_pct_of_retrain", ("timing", "rte_frac_of_retrain")),
    # Is it forgotten or only hidden? (robustness.headline; the relearning figures are for the smallest k)
    *_under(
        ("robustness", "headline"),
        "relearn_forget_acc",
        "relearn_residual",
        "prototype_forget_acc",
        "probe_forget_acc",
        "cka_vs_retrain",
        "heldout_auc",
        "privleak",
        "ece",
    ),
]


def _get(results: dict[str, Any] | None, path: tuple[str, ...]) -> Any:
    value: Any = results
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def forget_figure(scores: dict[str, Any]) -> tuple[str, float | None]:
    """The accuracy that should fall: the forgotten classes' test images, else the forget set itself."""
    if _number(scores.get("forget_test_acc")) is not None:
        return "forgotten-class test acc (%)", _number(scores["forget_test_acc"])
    return "forget-set acc (%)", _number(scores.get("forget_train_acc"))


def retain_figure(scores: dict[str, Any]) -> tuple[str, float | None]:
    return "retained test acc (%)", _number(scores.get("retain_test_acc"))


@dataclass
class SweepSummary:
    sweep_dir: Path
    jobs: list[Job]
    keys: list[str]  # the swept override keys, in the order they first appear
    _reads: dict[Path, Reads] = field(default_factory=dict, repr=False)

    @property
    def failed(self) -> list[Job]:
        return [job for job in self.jobs if not job.ok]

    def reads(self, job: Job) -> Reads:
        """What the job's method reads (from the config it ran, else its option's YAML), looked up once."""
        if job.dir not in self._reads:
            config = ((job.results or {}).get("config") or {}).get("method")
            self._reads[job.dir] = reads_of_row(job_method(job), config)
        return self._reads[job.dir]

    def refusal(self, job: Job) -> str | None:
        """Why a job that did not finish ok was refused: its method is not defined for the job's forget spec."""
        return None if job.ok else self.reads(job).refusal(forget_spec_of([job]))

    def ordered_jobs(self) -> list[Job]:
        """Retrain first, then by the data the method reads, in job order within a group."""
        return sorted(self.jobs, key=lambda job: group_rank(job_method(job), self.reads(job)))

    def row(self, job: Job) -> dict[str, Any]:
        row: dict[str, Any] = {"job": job.dir.name, **{k: job.overrides.get(k, "") for k in self.keys}}
        # A method sweep's swept key *is* the method column: keep one, not a duplicate CSV header.
        row.setdefault("method", (job.results or {}).get("method", ""))
        row["reads"] = self.reads(job).label
        row["status"] = job.status
        for name, path in FIGURES:
            value = _number(_get(job.results, path)) if job.ok else None
            row[name] = None if value is None else (100 * value if name == "rte_pct_of_retrain" else value)
        row["original_cached"] = _get(job.results, ("cache", "original", "hit")) if job.ok else None
        row["error"] = (job.results or {}).get("error", "") if not job.ok else ""
        return row

    def rows(self) -> list[dict[str, Any]]:
        return [self.row(job) for job in self.ordered_jobs()]

    def references(self) -> dict[str, dict[str, Any]]:
        """The original model's and Retrain's scores, as the first finished job measured them.

        A sweep over the method or λ shares both; a seed sweep does not, and then the references
        shown are the first seed's (stated in summary.md).
        """
        for job in self.jobs:
            if job.ok:
                metrics = job.results["metrics"]
                return {name: metrics[name] for name in ("original", "retrain") if name in metrics}
        return {}

    def references_shared(self) -> bool:
        keys = {
            (_get(job.results, ("cache", "original", "key")), _get(job.results, ("cache", "retrain", "key"))) for job in self.jobs if job.ok
        }
        return len(keys) <= 1


def summarize(sweep_dir: str | Path) -> SweepSummary:
    jobs = load_jobs(sweep_dir)
    return SweepSummary(Path(sweep_dir), jobs, varied_keys(jobs))


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def to_csv(summary: SweepSummary) -> str:
    rows = summary.rows()
    columns = list(
        dict.fromkeys(["job", *summary.keys, "method", "status", *(name for name, _ in FIGURES), "original_cached", "error", "reads"])
    )
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row[k] is None else row[k] for k in columns})
    return out.getvalue()


MD_FIGURES = [
    "forget_test_acc",
    "retain_test_acc",
    "test_acc",
    "UA",
    "RA",
    "TA",
    "mia_efficacy",
    "avg_gap",
    "unlearn_s",
    "relearn_residual",
    "probe_forget_acc",
    "privleak",
]


def to_markdown(summary: SweepSummary) -> str:
    jobs = summary.ordered_jobs()
    rows = [summary.row(job) for job in jobs]
    for job, row in zip(jobs, rows):
        if why := summary.refusal(job):
            row["status"] = refused_cell(why)  # not a failure of the method: it is not defined for this forget spec
    ok = len(summary.jobs) - len(summary.failed)
    head = list(dict.fromkeys(["job", *summary.keys, "method"]))
    head.insert(head.index("method") + 1, "reads")
    head += [*MD_FIGURES, "status"]
    lines = [
        f"# Sweep summary: {summary.sweep_dir}",
        "",
        f"{len(summary.jobs)} jobs, {ok} ok, {len(summary.failed)} not ok. Accuracies in %, times in seconds.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row[k]) for k in head) + " |")
    references = summary.references()
    if references:
        shared = "" if summary.references_shared() else " (jobs used different original models; these are the first finished job's)"
        lines += ["", f"Reference points{shared}:", "", "| model | " + " | ".join(MD_FIGURES[:7]) + " |", "|" + "---|" * 8]
        for name, scores in references.items():
            lines.append(f"| {name} | " + " | ".join(_cell(_number(scores.get(k))) for k in MD_FIGURES[:7]) + " |")
    for job in summary.failed:
        lines.append("")
        lines.append(f"- job {job.dir.name} ({job.status}): {(job.results or {}).get('error', 'no results.json was written')}")
    return "\n".join(lines) + "\n"
