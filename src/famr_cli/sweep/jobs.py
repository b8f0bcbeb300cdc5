"""The jobs of a sweep directory, read back from what each job wrote (results.json, .hydra/overrides.yaml),
and what each ran: its table row's method, its seed, the forget spec.

Reading files rather than in-process state makes every launcher look the same: jobs run in this
process (basic launcher), in worker processes (joblib) or on other machines (SLURM).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from famr_cli.famr_definition import row_key
from famr_cli.results import RESULTS_FILE


@dataclass
class Job:
    """One job of a sweep: its directory, the overrides it ran with, and its results (None if it wrote none)."""

    dir: Path
    overrides: dict[str, str] = field(default_factory=dict)
    results: dict[str, Any] | None = None

    @property
    def status(self) -> str:
        # A job killed before it wrote anything (SIGKILL, SLURM time limit) is "missing", never silently "ok".
        return "missing" if self.results is None else str(self.results.get("status", "unknown"))

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _job_number(path: Path) -> tuple[int, str]:
    return (int(path.name), "") if path.name.isdigit() else (1 << 30, path.name)


def _overrides(job_dir: Path) -> dict[str, str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    items = yaml.safe_load(path.read_text()) or []
    return dict(item.split("=", 1) for item in items if "=" in item and not item.startswith("hydra."))


def load_jobs(sweep_dir: str | Path) -> list[Job]:
    """Every job directory of ``sweep_dir`` (one with a results.json or a .hydra/ folder), in job order."""
    sweep_dir = Path(sweep_dir)
    jobs = []
    for job_dir in sorted((p for p in sweep_dir.iterdir() if p.is_dir()), key=_job_number) if sweep_dir.is_dir() else []:
        results_file = job_dir / RESULTS_FILE
        if not results_file.is_file() and not (job_dir / ".hydra").is_dir():
            continue
        results = json.loads(results_file.read_text()) if results_file.is_file() else None
        jobs.append(Job(job_dir, _overrides(job_dir), results))
    return jobs


def varied_keys(jobs: list[Job]) -> list[str]:
    """The override keys whose value differs between jobs: what the sweep swept (shared overrides are not)."""
    keys: list[str] = []
    for job in jobs:
        for key in job.overrides:
            if key not in keys and len({j.overrides.get(key) for j in jobs}) > 1:
                keys.append(key)
    return keys


def job_method(job: Job) -> str:
    """The job's row: its method, a named variant's name, or for a FAMR job that changed FAMR's definition
    (``method.loss=entropy`` on the command line) ``famr[loss=entropy]``, never plain FAMR."""
    name = job.overrides.get("method") or (job.results or {}).get("method") or "?"
    method = ((job.results or {}).get("config") or {}).get("method") or {}
    return row_key(method, name) if name == "famr" else name


def job_seed(job: Job) -> int | None:
    value = job.overrides.get("seed")
    if value is None:
        value = ((job.results or {}).get("config") or {}).get("seed")
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def forget_spec_of(jobs: Iterable[Job]) -> str | None:
    """The forget spec (``forget=<name>``) the jobs ran, when they agree on one."""
    specs = {
        spec
        for j in jobs
        if (spec := j.overrides.get("forget") or (((j.results or {}).get("config") or {}).get("forget") or {}).get("name"))
    }
    return specs.pop() if len(specs) == 1 else None
