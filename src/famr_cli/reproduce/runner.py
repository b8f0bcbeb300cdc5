"""Run a profile: one ``famr-run -m`` per experiment and seed set, then the tables and the λ plots.

Every sweep writes into ``<runs>/<profile>/<experiment>/{methods,lambda}`` (``hydra.sweep.dir``).
``famr-run`` exits non-zero when any of its jobs failed but still runs the others, so the tables are
built from the jobs that finished ok, the failed ones are counted and footnoted, and :func:`reproduce`
returns 1 at the end, after the profile's wall time. A method not defined for a table's forget spec
(``forget_specs``) is left out of that table's sweep, and its row says why. The sweeps run in their own
processes; this one imports torch only to ask the methods what they read and where they are defined
(:mod:`famr_cli.method_reads`).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from famr_cli.errors import FamrError
from famr_cli.host import describe_machine, famr_run_command
from famr_cli.method_reads import reads_of_option, refused_cell
from famr_cli.reproduce import table_render, tables
from famr_cli.reproduce.data import DataPlan, hydra_value
from famr_cli.reproduce.privacy_step import PrivacyStudy, run_privacy
from famr_cli.reproduce.profiles import CLASS_TABLE, ForgetTable, Profile
from famr_cli.sweep.jobs import load_jobs

METHODS = "methods"
LAMBDA = "lambda"
PLOTS = ("tradeoff.png", "accuracy_vs_lam.png", "relearning.png")  # written into a sweep dir by the sweep-summary callback
MACHINE_FILE = "machine.txt"


@dataclass
class Sweep:
    experiment: str
    kind: str  # METHODS or LAMBDA
    dir: Path
    argv: list[str]
    table: ForgetTable = CLASS_TABLE  # which forget spec a METHODS sweep runs
    refused: dict[str, str] = field(default_factory=dict)  # methods left out (not defined for the spec) -> why
    runs: bool = True  # False for a methods sweep whose every method refuses its forget spec: nothing to run

    def command(self) -> str:
        return shlex.join(self.argv)

    def notes(self) -> list[str]:
        """What the sweep leaves out, one line each (the dry run prints them as comments)."""
        return [
            f"{self.experiment} {self.dir.name}: method={m} does not run with forget={self.table.spec} {refused_cell(why)}"
            for m, why in self.refused.items()
        ]


def _numbers(values) -> str:
    return ",".join(format(v, "g") for v in values)


def plan_sweeps(
    profile: Profile,
    runs_root: Path,
    data: DataPlan,
    famr_run: list[str] | None = None,
    resume: bool = False,
    overrides: list[str] | None = None,
) -> list[Sweep]:
    """Every methods sweep (one per experiment and forget table, all methods x all seeds), then FAMR's λ sweep
    (with the class table).
    ``resume``: the jobs skip themselves where the same sweep dir holds their ok results. ``overrides``: the user's
    famr-run overrides (a launcher, say), added to every sweep after the profile's own."""
    famr_run = famr_run or famr_run_command()
    base = runs_root / profile.name
    sweeps = []

    def sweep(
        experiment: str,
        kind: str,
        choices: list[str],
        seeds: tuple[int, ...],
        table: ForgetTable = CLASS_TABLE,
        extra: tuple[str, ...] = (),
    ) -> Sweep:
        out = base / experiment / (f"{kind}_{table.name}" if table.name else kind)
        argv = [
            *famr_run,
            "-m",
            f"experiment={experiment}",
            *choices,
            *table.overrides,
            *profile.seed_overrides(seeds),
            *data.overrides.get(experiment, []),
            *profile.overrides,
            *extra,
            *(overrides or []),
            *(["skip_finished=true"] if resume else []),
            "progress=false",
            f"hydra.sweep.dir={hydra_value(str(out))}",
        ]
        return Sweep(experiment, kind, out, argv, table)

    for experiment in profile.experiments:
        for table in profile.forget_tables:
            refused = {m: why for m in profile.methods if (why := reads_of_option(m).refusal(table.spec))}
            chosen = [m for m in profile.methods if m not in refused]
            each = sweep(experiment, METHODS, [f"method={','.join(chosen)}"], profile.seeds, table)
            each.refused, each.runs = refused, bool(chosen)
            sweeps.append(each)
    # FAMR's λ trade-off is measured on class forgetting, so it runs with the class table (and with FAMR chosen).
    if profile.lambdas and CLASS_TABLE in profile.forget_tables and "famr" in profile.methods:
        lam = ["method=famr", f"method.lam={_numbers(profile.lambdas)}"]
        sweeps.append(sweep(profile.lambda_experiment, LAMBDA, lam, (profile.lambda_seed,), extra=profile.lambda_overrides))
    return sweeps


# The jobs a sweep dir was started with (its famr-run arguments, one per line): --resume continues only the
# same jobs, since Hydra numbers job dirs by position and another method list would put other jobs there.
SWEEP_ARGS_FILE = "famr-reproduce.args"


def _job_args(sweep: Sweep) -> list[str]:
    """What decides the sweep's jobs and their order: its famr-run arguments without the resume switch."""
    return [arg for arg in sweep.argv[sweep.argv.index("-m") + 1 :] if arg != "skip_finished=true"]


def check_resumable(sweeps: list[Sweep]) -> None:
    """Raise :class:`FamrError` when --resume would continue a sweep dir that was started with other jobs."""
    for sweep in sweeps:
        recorded = sweep.dir / SWEEP_ARGS_FILE
        if sweep.runs and recorded.is_file() and recorded.read_text().splitlines() != _job_args(sweep):
            raise FamrError(
                f"--resume would continue {sweep.dir}, which was started with other jobs (another --methods, --seeds or "
                f"data); run the same command it was started with, or leave out --resume to set it aside."
            )


def _set_aside(path: Path) -> Path | None:
    """A previous run's sweep dir is renamed, never mixed with (or deleted by) the new one."""
    if not path.exists() or not any(path.iterdir()):
        return None
    target = path.with_name(f"{path.name}.prev-{time.strftime('%Y%m%d-%H%M%S')}")
    path.rename(target)
    return target


def run_sweeps(sweeps: list[Sweep], log=print, resume: bool = False) -> dict[str, int]:
    """Run each sweep in turn (famr-run's own output streams through); returns the exit code per sweep dir.
    A previous run's sweep dir is set aside, unless ``resume``: then its finished jobs are kept."""
    codes = {}
    for sweep in sweeps:
        for note in sweep.notes():
            log(f"[reproduce] {note}")
        # A sweep that runs nothing has nothing to resume: its earlier jobs must not reach the tables.
        moved = None if (resume and sweep.runs) else _set_aside(sweep.dir)
        if moved:
            log(f"[reproduce] kept the previous {sweep.kind} sweep of {sweep.experiment} as {moved}")
        if not sweep.runs:
            continue
        sweep.dir.mkdir(parents=True, exist_ok=True)
        (sweep.dir / SWEEP_ARGS_FILE).write_text("\n".join(_job_args(sweep)) + "\n")
        log(f"[reproduce] {sweep.command()}")
        start = time.perf_counter()
        codes[str(sweep.dir)] = subprocess.run(sweep.argv).returncode
        log(f"[reproduce] {sweep.kind} sweep of {sweep.experiment}: exit {codes[str(sweep.dir)]} after {time.perf_counter() - start:.0f} s")
    return codes


@dataclass
class Written:
    tables: list[tables.Table]  # one per sweep, in the sweeps' order
    files: list[Path]
    missing_plots: list[str]
    forgotten: list[tables.Table] = field(default_factory=list)  # "Is it forgotten?", one per methods sweep


def write_tables(profile: Profile, sweeps: list[Sweep], out_dir: Path, machine: str | None) -> Written:
    """Markdown, CSV and LaTeX per experiment (and per λ sweep); the λ plots copied when they exist."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = Written([], [], [])
    for sweep in sweeps:
        jobs = load_jobs(sweep.dir) if sweep.runs else []  # a sweep that runs nothing has no jobs of this profile
        stem = f"{profile.name}_{sweep.experiment}" + (f"_{sweep.table.name}" if sweep.table.name else "")
        # The Avg. Gap table and the "is it forgotten?" table of a methods sweep read the same jobs the same way.
        shared = dict(expected=profile.methods, seeds=profile.seeds, machine=machine, title=sweep.table.title, forget_spec=sweep.table.spec)
        if sweep.kind == METHODS:
            table = tables.build_table(jobs, sweep.experiment, **shared)
        else:
            stem += "_lambda"
            table = tables.lambda_table(jobs, sweep.experiment, profile.lambdas, (profile.lambda_seed,), machine=machine)
            for plot in PLOTS:
                source = sweep.dir / plot
                if source.is_file():
                    target = out_dir / f"{stem}_{plot}"
                    shutil.copyfile(source, target)
                    written.files.append(target)
                else:
                    written.missing_plots.append(str(source))
        written.tables.append(table)
        outputs = [(stem, table)]
        if sweep.kind == METHODS:
            forgotten = tables.robustness_table(jobs, sweep.experiment, **shared)
            written.forgotten.append(forgotten)
            outputs.append((f"{stem}_forgotten", forgotten))
        for name, each in outputs:
            for suffix, render in ((".md", table_render.to_markdown), (".csv", table_render.to_csv), (".tex", table_render.to_latex)):
                path = out_dir / f"{name}{suffix}"
                path.write_text(render(each))
                written.files.append(path)
    return written


def wall_time(seconds: float) -> str:
    """``4865 s (1 h 21 min 5 s)``: the seconds, and hours and minutes once there are any."""
    whole = round(seconds)
    hours, minutes, secs = whole // 3600, whole // 60 % 60, whole % 60
    parts = ([f"{hours} h"] if hours else []) + ([f"{minutes} min"] if hours or minutes else []) + [f"{secs} s"]
    return f"{whole} s" + (f" ({' '.join(parts)})" if whole >= 60 else "")


def reproduce(
    profile: Profile,
    sweeps: list[Sweep],
    out_dir: Path,
    runs_root: Path,
    tables_only: bool = False,
    resume: bool = False,
    log=print,
    privacy: list[PrivacyStudy] | None = None,
) -> int:
    """Run the sweeps (unless ``tables_only``), write the tables, then the ``privacy`` studies when given; log the
    profile's wall time last; 0 only when every job finished ok."""
    start = time.perf_counter()
    code = _reproduce(profile, sweeps, out_dir, runs_root, tables_only, resume, log)
    if privacy:
        privacy_code, files = run_privacy(profile, privacy, out_dir, log)
        log(f"[reproduce] wrote {len(files)} privacy files under {out_dir}: " + ", ".join(p.name for p in files))
        code = code or (1 if privacy_code else 0)
    log(f"[reproduce] wall time of profile {profile.name}: {wall_time(time.perf_counter() - start)}.")
    return code


def _reproduce(profile: Profile, sweeps: list[Sweep], out_dir: Path, runs_root: Path, tables_only: bool, resume: bool, log) -> int:
    machine_file = runs_root / profile.name / MACHINE_FILE
    codes: dict[str, int] = {}
    if tables_only:
        machine = machine_file.read_text().strip() if machine_file.is_file() else None
    else:
        machine = describe_machine()
        machine_file.parent.mkdir(parents=True, exist_ok=True)
        machine_file.write_text(machine + "\n")
        codes = run_sweeps(sweeps, log, resume=resume)
    written = write_tables(profile, sweeps, out_dir, machine)
    for table in [*written.tables, *written.forgotten]:
        log("")
        log(table_render.to_markdown(table))
    failed = sum(t.failed for t in written.tables)
    total = sum(t.jobs for t in written.tables)
    empty = [f"{s.experiment} ({s.dir.name})" for s, t in zip(sweeps, written.tables) if s.runs and not any(r.n for r in t.rows)]
    log(f"[reproduce] wrote {len(written.files)} files under {out_dir}: " + ", ".join(p.name for p in written.files))
    if written.missing_plots:
        log("[reproduce] no λ plot to copy (the sweep summary did not write it): " + ", ".join(written.missing_plots))
    bad_codes = {d: c for d, c in codes.items() if c}
    if failed or bad_codes or empty:
        exits = ", ".join(f"{d} ({c})" for d, c in bad_codes.items())
        log(
            f"[reproduce] {failed} of {total} jobs did not finish ok (marked † in the tables)"
            + (f"; famr-run exited non-zero for {len(bad_codes)} sweep(s): {exits}" if bad_codes else "")
            + (f"; no ok job at all for {', '.join(empty)}" if empty else "")
            + "."
        )
        return 1
    log(f"[reproduce] all {total} jobs finished ok.")
    return 0
