"""The comparison tables: jobs' results.json -> mean ± std over seeds, ready to render.

One :class:`Table` per experiment, one :class:`Row` per method: Retrain (the reference) first, then the
methods grouped by the training data they read (:mod:`famr_cli.method_reads`: D_f only, D_f + D_r,
D_r only, all of D), each group in the field's order; a method not defined for the table's forget spec keeps
its row, which says why it is empty. The columns of ``scripts/summarize.py --compare`` (UA, RA, TA, forget-test accuracy,
MIA-Efficacy, Avg. Gap, RTE in seconds and in percent of Retrain). Cells hold the mean and the sample
standard deviation (n − 1) over the seeds whose job finished ok; a cell whose number of seeds differs
from the table's says so (``(n=1)``), and rows with failed jobs are marked † and footnoted.
The columns are :mod:`famr_cli.reproduce.table_columns`; Markdown, CSV and LaTeX are
:mod:`famr_cli.reproduce.table_render`.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from famr_cli.famr_definition import row_label
from famr_cli.method_reads import METHOD_NAMES, Reads, grouped, reads_of_row
from famr_cli.reproduce.table_columns import (
    DAGGER,
    LATEX_NAMES,
    METRICS,
    MISSING,
    ROBUSTNESS_METRICS,
    ROBUSTNESS_UNITS,
    UNITS,
    Metric,
    latex_escape,
)
from famr_cli.sweep.jobs import Job, forget_spec_of, job_method, job_seed


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float | None  # sample std (n - 1); None for a single value
    n: int


@dataclass
class Failure:
    seed: int | None
    status: str
    error: str
    dir: str


@dataclass
class Row:
    key: str  # the method (or λ) this row aggregates
    label: str  # its display name
    latex_label: str
    seeds: list[int | None] = field(default_factory=list)  # seeds of the ok jobs
    stats: dict[str, Stat | None] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    trials: str = MISSING  # the search behind the method's values (its tuned file's tuned_by.trials)
    reads: Reads | None = None  # the training data the method reads (method tables; None in the λ table)
    refused: str | None = None  # why the method has no figures here, e.g. "defined for class forgetting only"

    @property
    def n(self) -> int:
        return len(self.seeds)


@dataclass
class Table:
    experiment: str
    rows: list[Row]
    seeds: list[int]  # every seed the table's jobs ran with (failed ones included)
    devices: list[str]  # results' "device" values
    forget: str | None = None  # e.g. "class 0 (airplane)"
    machine: str | None = None  # the host that ran the jobs, e.g. "AMD EPYC, 2 cores"
    kind: str = "method"  # the rows' header: "method" or "λ"
    title: str = "Class forgetting"
    metrics: list[Metric] = field(default_factory=lambda: METRICS)
    units: str = UNITS
    tuned_on: str | None = None  # the forget sets the rows' searches scored, e.g. "forget.classes=[3]; forget.classes=[8]"

    @property
    def grouped(self) -> bool:
        """Whether the rows are methods grouped by the data they read (and the table has a reads column)."""
        return self.kind == "method"

    @property
    def jobs(self) -> int:
        return sum(r.n + len(r.failures) for r in self.rows)

    @property
    def failed(self) -> int:
        return sum(len(r.failures) for r in self.rows)

    def caption(self) -> str:
        seeds = ", ".join(str(s) for s in self.seeds) or "?"
        spread = f"mean ± std over seeds {seeds}" if len(self.seeds) > 1 else f"seed {seeds}"
        device = ", ".join(self.devices) or "unknown device"
        machine = f"{device} ({self.machine})" if self.machine else device
        parts = [f"{self.title}, {self.experiment}" + (f", forget {self.forget}" if self.forget else ""), spread, f"device: {machine}"]
        if self.tuned_on:
            parts.append(f"tuned values searched on other forget sets ({self.tuned_on}), never on the one reported")
        if self.failed:
            parts.append(f"{self.failed} of {self.jobs} jobs failed ({DAGGER})")
        return "; ".join(parts) + ". " + self.units + (" " + READS_NOTE if self.grouped else "")


READS_NOTE = (
    "reads = the training data the method's unlearning reads (D_f: the forget set, D_r: the retained set, D: both); "
    "Retrain, the reference, first, then the methods grouped by it."
)


# ---------------------------------------------------------------------------------------------- aggregation


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def aggregate(values: Iterable[Any]) -> Stat | None:
    """Mean and sample std (n - 1) of the finite values; None when there are none."""
    xs = [v for v in (_finite(x) for x in values) if v is not None]
    if not xs:
        return None
    return Stat(statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else None, len(xs))


def _forget_text(results: dict[str, Any]) -> str | None:
    forget, names = results.get("forget") or {}, (results.get("dataset") or {}).get("class_names") or []
    classes = forget.get("classes")
    if not classes:
        return forget.get("description")
    described = [f"{c} ({names[c]})" if isinstance(c, int) and c < len(names) and names[c] != str(c) else str(c) for c in classes]
    return ("class " if len(described) == 1 else "classes ") + ", ".join(described)


def _forget_of_all(results: Iterable[dict[str, Any]]) -> str | None:
    """The forget set the jobs share; where each seed drew its own (sample forgetting), the draw without its seed."""
    texts = list(dict.fromkeys(text for r in results if (text := _forget_text(r))))
    if len(texts) <= 1:
        return texts[0] if texts else None
    unseeded = {re.sub(r" \(seed \d+\)$", "", text) for text in texts}
    return f"{unseeded.pop()} (a draw per seed)" if len(unseeded) == 1 else "; ".join(texts)


def _method_config(jobs: list[Job]) -> dict[str, Any] | None:
    """The ``method`` section the jobs of a row ran with (results.json's config), when one wrote it."""
    return next((m for j in jobs if (m := ((j.results or {}).get("config") or {}).get("method"))), None)


def _failure(job: Job) -> Failure:
    results = job.results or {}
    error = str(results.get("error") or ("no results.json (the job was killed or never started)" if job.results is None else ""))
    return Failure(job_seed(job), job.status, error, str(job.dir))


def build_table(
    jobs: list[Job],
    experiment: str,
    *,
    key: Callable[[Job], str] = job_method,
    order: list[str] | None = None,
    labels: dict[str, str] | None = None,
    latex_labels: dict[str, str] | None = None,
    expected: Iterable[str] = (),
    seeds: Iterable[int] = (),
    machine: str | None = None,
    kind: str = "method",
    title: str = "Class forgetting",
    metrics: list[Metric] | None = None,
    units: str = UNITS,
    forget_spec: str | None = None,
) -> Table:
    """One table over ``jobs``: rows grouped by ``key`` (the method by default), aggregated across seeds.

    ``order`` fixes the order of the rows (keys not in it follow in the order they appear); a method table
    (``kind="method"``) then lists Retrain first and the others grouped by the data they read.
    ``expected`` keys get a row even without any job, and ``seeds`` are the seeds planned: a planned
    (key, seed) pair without a job counts as a missing job. A method not defined for ``forget_spec`` (by
    default the spec the jobs ran) gets a row that says so, never a failure.
    """
    order = list(METHOD_NAMES) if order is None else order
    labels = METHOD_NAMES if labels is None else labels
    latex_labels = LATEX_NAMES if latex_labels is None else latex_labels
    groups: dict[str, list[Job]] = {k: [] for k in expected}
    for job in jobs:
        groups.setdefault(key(job), []).append(job)
    wanted = [k for k in order if k in groups] + [k for k in groups if k not in order]
    reads = {k: reads_of_row(k, _method_config(groups[k])) for k in wanted} if kind == "method" else {}
    if reads:
        wanted = grouped(wanted, reads.__getitem__)
        forget_spec = forget_spec or forget_spec_of(j for j in jobs if j.ok)
    planned = sorted(set(seeds) | {s for j in jobs if (s := job_seed(j)) is not None})
    rows = []
    for name in wanted:
        members = groups[name]
        ok = [j for j in members if j.ok]
        label = row_label(name, labels)
        row = Row(name, label, latex_labels.get(name, latex_escape(label)), seeds=[job_seed(j) for j in ok], reads=reads.get(name))
        row.refused = row.reads.refusal(forget_spec) if row.reads else None
        if not row.refused:  # a method that refuses the spec never ran: nothing of it failed
            row.failures = [_failure(j) for j in members if not j.ok]
            ran = {job_seed(j) for j in members}
            row.failures += [Failure(s, "missing", "no job ran with this seed", "") for s in planned if s not in ran]
        row.stats = {m.key: aggregate(m.get(j.results) for j in ok) for m in metrics or METRICS}
        row.trials = trials_behind(next((j.results for j in ok if j.results), None))
        rows.append(row)
    ok_results = [j.results for j in jobs if j.ok and j.results]
    devices = sorted({str(r.get("device")) for r in ok_results if r.get("device")})
    forget = _forget_of_all(r for r in ok_results)
    return Table(experiment, rows, planned, devices, forget, machine, kind, title, metrics or METRICS, units, _tuned_on(ok_results))


def _tuned_on(results: Iterable[dict[str, Any]]) -> str | None:
    """The forget sets the rows' tuned files were searched on, as their tuned_by blocks name them."""
    sets: dict[str, None] = {}
    for r in results:
        tuned_by = ((r.get("config") or {}).get("method") or {}).get("tuned_by") or {}
        sets.update(dict.fromkeys(str(f) for f in tuned_by.get("forget_sets") or ()))
    return "; ".join(sets) or None


def robustness_table(jobs: list[Job], experiment: str, *, title: str, **kwargs: Any) -> Table:
    """ "Is it forgotten?": the same jobs as a method table, with the robustness checks' headline columns."""
    return build_table(jobs, experiment, title=f"Is it forgotten? {title}", metrics=ROBUSTNESS_METRICS, units=ROBUSTNESS_UNITS, **kwargs)


def trials_behind(results: dict[str, Any] | None) -> str:
    """How many search trials chose a job's method values: its tuned file's count, 0 for a method's own
    defaults (no tuned file), – for Retrain and for jobs without results."""
    if not results or results.get("method") == "retrain":
        return MISSING
    tuned_by = ((results.get("config") or {}).get("method") or {}).get("tuned_by")
    if not tuned_by:
        return "0"
    trials = tuned_by.get("trials")
    protocol = str(tuned_by.get("protocol", ""))
    text = str(trials) if trials is not None else "?"
    if protocol == "famr-tune" and tuned_by.get("accepted") == 0:
        return f"{text} (0 accepted)"  # no setting passed the collapse guard: the file names the values used instead
    return text if protocol == "famr-tune" else f"{text} (hand)" if protocol.startswith("hand") else f"{text} (none)"


def _lam(job: Job) -> str:
    value = job.overrides.get("method.lam")
    if value is None:
        value = (((job.results or {}).get("config") or {}).get("method") or {}).get("lam")
    return "?" if value is None else format(float(value), "g")


def lambda_table(
    jobs: list[Job], experiment: str, lambdas: Iterable[float] = (), seeds: Iterable[int] = (), machine: str | None = None
) -> Table:
    """FAMR's λ sweep: one row per λ (the planned ``lambdas`` and any other the jobs ran), in increasing order."""
    planned = [format(float(v), "g") for v in lambdas]
    lams = sorted({*planned, *(_lam(j) for j in jobs)}, key=lambda v: (v == "?", float(v) if v != "?" else 0.0))
    labels = {v: f"λ = {v}" for v in lams}
    latex = {v: f"$\\lambda = {v}$" for v in lams}
    return build_table(
        jobs,
        experiment,
        key=_lam,
        order=lams,
        labels=labels,
        latex_labels=latex,
        expected=planned,
        seeds=seeds,
        machine=machine,
        kind="λ",
        title="FAMR's λ trade-off",
    )
