"""Run every bad input of docs/errors.md through famr-run and check that each is rejected cleanly.

    python scripts/bad_input_drill.py                  # the whole table, 2 famr-run processes at a time
    python -m famr_lab.bad_input_drill                 # the same
    python scripts/bad_input_drill.py --workers 1 --keep

"Clean" means: the exit code the table lists, the table's message fragment in the output, no
Python traceback, and for exit 2 (famr's bad-input code) exactly one ``[ERROR]`` line, ending in
a period. Each case runs in its own process (a fork of famr_lab.forkserver, or a new ``--exe``)
with ``hydra.run.dir=<run root>/bad-<n>`` (and ``evaluate.reference=none`` unless the case sets
evaluate.reference), against a throw-away cache
and output dir (FAMR_CACHE_DIR / FAMR_OUTPUT_DIR). Prints ``bad inputs tried: N, rejected cleanly: M``
and the rows that were not clean; exits 1 when M < N.

This module is the one implementation behind tests/test_bad_input.py and the fault drills:
``parse_table`` reads the table, ``run_case`` runs one row, ``run_all`` runs many.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from famr_lab.forkclient import FamrServer

# The checkout this drill belongs to (src/famr_lab/ is two levels below it): the table lives in its docs/.
REPO = Path(__file__).resolve().parents[2]
TABLE = REPO / "docs" / "errors.md"
HEADER = ["#", "Bad input", "famr-run arguments", "Exit", "Message contains"]
# The console script next to the interpreter running this (the project's venv).
FAMR_RUN = str(Path(sys.executable).with_name("famr-run"))
EXIT_BAD_INPUT = 2
ERROR_TAG = "[ERROR]"


@dataclass(frozen=True)
class Case:
    """One row of the table."""

    number: int
    description: str
    args: list[str]
    exit_code: int
    fragment: str

    @property
    def id(self) -> str:
        """A test id such as ``07-negative-method-lam``."""
        slug = re.sub(r"[^a-z0-9]+", "-", self.description.lower()).strip("-")
        return f"{self.number:02d}-{slug[:48].rstrip('-')}"

    @property
    def run_name(self) -> str:
        return f"bad-{self.number:02d}"


@dataclass
class Outcome:
    """What famr-run did with one case."""

    case: Case
    exit_code: int | None  # None when it ran past the timeout
    fragment_found: bool
    traceback: bool
    error_lines: list[str]  # the famr [ERROR] log lines, whole
    output: str  # stdout + stderr
    run_dir: Path
    seconds: float
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems

    @property
    def messages(self) -> list[str]:
        """The sentences of the [ERROR] lines, without the log prefix."""
        return [line.split(f"{ERROR_TAG} - ", 1)[-1].strip() for line in self.error_lines]

    def results(self) -> dict[str, Any] | None:
        """The run dir's results.json, or None when there is none (Hydra's own errors write none)."""
        path = self.run_dir / "results.json"
        return json.loads(path.read_text()) if path.is_file() else None


def _cells(line: str) -> list[str]:
    """The cells of a Markdown table row; ``\\|`` is a literal bar inside a cell."""
    inner = line.strip().strip("|")
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", inner)]


def _code(cell: str, what: str, number: str) -> str:
    match = re.fullmatch(r"`([^`]*)`", cell)
    if match is None:
        raise ValueError(f"row {number}: the {what} cell must be one `code span`, got {cell!r}")
    return match.group(1)


def parse_table(path: Path | str = TABLE) -> list[Case]:
    """The cases of the one table in ``path`` whose header is ``| # | Bad input | famr-run arguments | Exit | Message contains |``."""
    lines = Path(path).read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("|") and _cells(line) == HEADER), None)
    if start is None:
        raise ValueError(f"{path} has no table with the columns {' | '.join(HEADER)}")
    cases: list[Case] = []
    for line in lines[start + 2 :]:  # after the header and its |---| row
        if not line.lstrip().startswith("|"):
            break
        cells = _cells(line)
        if len(cells) != len(HEADER):
            raise ValueError(f"{path}: a table row needs {len(HEADER)} cells, got {len(cells)}: {line!r}")
        number, description, args, exit_code, fragment = cells
        cases.append(
            Case(
                number=int(number),
                description=description,
                args=shlex.split(_code(args, "arguments", number)),
                exit_code=int(exit_code),
                fragment=_code(fragment, "message", number),
            )
        )
    return cases


def _arguments(case: Case, run_root: Path) -> list[str]:
    args = [*case.args, f"hydra.run.dir={run_root / case.run_name}"]
    if not any(a.startswith(("evaluate.reference=", "evaluate=")) for a in case.args):
        args.append("evaluate.reference=none")  # never train a Retrain reference, whatever the case
    return args


def run_case(
    case: Case,
    env: dict[str, str],
    cwd: Path | str,
    run_root: Path | str | None = None,
    exe: str = FAMR_RUN,
    timeout: float = 300,
    server: FamrServer | None = None,
) -> Outcome:
    """Run famr-run on one case and judge its output; ``run_root`` holds the run dir (default ``cwd``).

    The case runs in a child of ``server`` (famr_lab.forkserver) when one is given, else in a new ``exe`` process.
    """
    run_root = Path(run_root if run_root is not None else cwd)
    start = time.perf_counter()
    try:
        args = _arguments(case, run_root)
        if server is not None:
            proc = server.run(args, cwd=cwd, env=env, timeout=timeout)
        else:
            proc = subprocess.run([exe, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        code: int | None = proc.returncode
        output = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as err:
        code = None
        output = _text(err.stdout) + _text(err.stderr)
    seconds = time.perf_counter() - start
    errors = [line for line in output.splitlines() if ERROR_TAG in line]
    outcome = Outcome(
        case=case,
        exit_code=code,
        fragment_found=case.fragment in output,
        traceback="Traceback" in output,
        error_lines=errors,
        output=output,
        run_dir=run_root / case.run_name,
        seconds=seconds,
    )
    outcome.problems = _problems(outcome)
    return outcome


def _text(stream: bytes | str | None) -> str:
    if stream is None:
        return ""
    return stream.decode(errors="replace") if isinstance(stream, bytes) else stream


def _problems(o: Outcome) -> list[str]:
    case = o.case
    problems = []
    if o.exit_code is None:
        problems.append("ran past its timeout (did it start training?)")
    elif o.exit_code != case.exit_code:
        problems.append(f"exit code {o.exit_code}, expected {case.exit_code}")
    if not o.fragment_found:
        problems.append(f"the output lacks {case.fragment!r}")
    if o.traceback:
        problems.append("the output holds a Python traceback")
    if case.exit_code == EXIT_BAD_INPUT:
        if len(o.error_lines) != 1:
            problems.append(f"{len(o.error_lines)} [ERROR] lines, expected exactly 1")
        elif not o.error_lines[0].rstrip().endswith("."):
            problems.append("the [ERROR] line does not end with a period")
    return problems


def run_all(
    cases: list[Case],
    env: dict[str, str],
    cwd: Path | str,
    workers: int = 2,
    run_root: Path | str | None = None,
    exe: str = FAMR_RUN,
    server: FamrServer | None = None,
) -> list[Outcome]:
    """Every case, ``workers`` famr-run processes at a time, in table order (``server``: see ``run_case``)."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda case: run_case(case, env, cwd, run_root, exe, server=server), cases))


def throwaway_env(tmp: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment with famr's and wandb's variables dropped and the cache and outputs under ``tmp``."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith(("WANDB_", "FAMR_"))}
    env.update(FAMR_CACHE_DIR=str(tmp / "cache"), FAMR_OUTPUT_DIR=str(tmp / "outputs"), WANDB_MODE="offline", WANDB_SILENT="true")
    return env


def report(outcomes: list[Outcome]) -> str:
    clean = sum(o.clean for o in outcomes)
    lines = [f"bad inputs tried: {len(outcomes)}, rejected cleanly: {clean}"]
    for o in outcomes:
        if not o.clean:
            lines.append(f"  row {o.case.number} ({o.case.description}): `{' '.join(o.case.args)}`: {'; '.join(o.problems)}")
            tail = [line for line in o.output.strip().splitlines() if line.strip()][-3:]
            lines += [f"      | {line}" for line in tail]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", type=Path, default=TABLE, help="the Markdown file holding the table (default docs/errors.md)")
    parser.add_argument("--workers", type=int, default=2, help="famr-run processes at a time (default 2)")
    parser.add_argument(
        "--exe", default=None, help="a famr-run console script to test, one process per case (default: famr_cli of this Python, forked)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the throw-away cache, outputs and run dirs, and print where")
    args = parser.parse_args(argv)

    cases = parse_table(args.table)
    tmp = Path(tempfile.mkdtemp(prefix="famr-bad-input-"))
    try:
        if args.exe is None:
            with FamrServer() as server:
                outcomes = run_all(cases, throwaway_env(tmp), cwd=tmp, workers=args.workers, server=server)
        else:
            outcomes = run_all(cases, throwaway_env(tmp), cwd=tmp, workers=args.workers, exe=args.exe)
        print(report(outcomes))
        if args.keep:
            print(f"run dirs, cache and outputs kept under {tmp}")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0 if all(o.clean for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
