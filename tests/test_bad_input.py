"""Bad input: every row of docs/errors.md is rejected cleanly, and none of them touches the cache.

One module-scoped fixture fills a cache with a real entry (a one-epoch run), fingerprints the cache
and the outputs, then runs the whole table through famr-run against that same cache and output dir
with famr_lab.bad_input_drill (two processes at a time); the tests below judge what it recorded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import cli_env, famr_server, run_cli
from famr_lab import bad_input_drill as drill

REPO = Path(__file__).resolve().parents[1]

CASES = drill.parse_table(REPO / "docs" / "errors.md")
BAD_INPUT_CASES = [case for case in CASES if case.exit_code == drill.EXIT_BAD_INPUT]


def fingerprint(root: Path, skip_runs: bool = False) -> dict[str, str]:
    """sha256 of every file under ``root`` by relative path; hidden lock files (and, with ``skip_runs``,
    the bad-* run dirs the drill adds) left out."""
    prints = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if path.name.startswith(".") and path.name.endswith(".lock"):
            continue
        if skip_runs and rel.parts[0].startswith("bad-"):
            continue
        prints[rel.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return prints


@dataclass
class DrillRun:
    cache: Path
    outputs: Path
    before: dict[str, dict[str, str]]
    after: dict[str, dict[str, str]]
    outcomes: dict[int, object]  # case number -> bad_input_drill.Outcome


@pytest.fixture(scope="module")
def drill_run(tmp_path_factory) -> DrillRun:
    tmp = tmp_path_factory.mktemp("bad_input")
    env = cli_env(tmp)
    cache, outputs = tmp / "cache", tmp / "outputs"
    # A real cache entry (original model and its evaluation) and a finished run, as cheap as they come.
    valid = run_cli(["train.epochs=1", "method.epochs=1", "evaluate.reference=none", f"hydra.run.dir={outputs / 'valid'}"], tmp, env)
    assert valid.returncode == 0, valid.stderr[-3000:]
    before = {"cache": fingerprint(cache), "outputs": fingerprint(outputs)}
    assert any(name.endswith("model.safetensors") for name in before["cache"]), before["cache"]

    outcomes = drill.run_all(CASES, env, cwd=tmp, workers=2, run_root=outputs, server=famr_server())
    after = {"cache": fingerprint(cache), "outputs": fingerprint(outputs, skip_runs=True)}
    return DrillRun(cache, outputs, before, after, {o.case.number: o for o in outcomes})


def test_the_table_has_at_least_30_rows_with_unique_arguments():
    assert len(CASES) >= 30
    assert len({case.number for case in CASES}) == len(CASES)
    assert len({tuple(case.args) for case in CASES}) == len(CASES)
    assert all(case.args and case.fragment and case.exit_code in (1, 2) for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_rejected_cleanly(drill_run, case):
    outcome = drill_run.outcomes[case.number]
    tail = "\n".join(outcome.output.strip().splitlines()[-15:])
    assert outcome.clean, f"{'; '.join(outcome.problems)}\n--- famr-run output (tail) ---\n{tail}"


@pytest.mark.parametrize("case", BAD_INPUT_CASES, ids=[case.id for case in BAD_INPUT_CASES])
def test_bad_input_run_dir_records_the_same_sentence(drill_run, case):
    outcome = drill_run.outcomes[case.number]
    results = outcome.results()
    assert results is not None, f"no results.json in {outcome.run_dir}"
    assert results["status"] == "failed" and results["exit_code"] == 2
    assert outcome.messages == [results["error"]]


def test_bad_input_leaves_the_cache_and_earlier_outputs_byte_identical(drill_run):
    assert drill_run.after["cache"] == drill_run.before["cache"]
    assert drill_run.after["outputs"] == drill_run.before["outputs"]
