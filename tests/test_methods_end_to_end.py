"""Every method end to end on digits in one Hydra multirun: same data, same original, same Retrain."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import NO_ROBUSTNESS, UNLEARN_THREADS, run_cli
from famr_cli.reproduce.profiles import ALL_METHODS

METHODS = list(ALL_METHODS)  # every method of the comparison tables, FAMR's named variants included
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def method_sweep(tmp_path_factory, quickstart_cache):
    tmp = tmp_path_factory.mktemp("methods")
    # Every job unlearns the quickstart's original and compares to its Retrain (the same data, backbone,
    # recipe and forget class): the sweep trains nothing (tests/test_sweep.py tests training once per sweep).
    shutil.copytree(quickstart_cache, tmp / "cache")
    sweep = tmp / "sweep"
    # The robustness checks are tested in tests/test_robustness.py and in a sweep in tests/test_sweep.py.
    args = [
        "-m",
        f"method={','.join(METHODS)}",
        "evaluate.reference=retrain",
        NO_ROBUSTNESS,
        UNLEARN_THREADS,
        f"hydra.sweep.dir={sweep}",
    ]
    proc = run_cli(args, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = {}
    for results_file in sweep.glob("*/results.json"):
        results = json.loads(results_file.read_text())
        jobs[results["method"]] = results
    yield sweep, jobs, proc
    shutil.rmtree(tmp, ignore_errors=True)


def test_every_method_runs_and_changes_the_model(method_sweep):
    _, jobs, _ = method_sweep
    assert sorted(jobs) == sorted(METHODS)
    for name, results in jobs.items():
        assert results["status"] == "ok", name
        assert results["certificate"]["param_dist"] > 0, f"{name} left the original model unchanged"
        assert results["gaps"]["avg_gap"] >= 0 and results["metrics"]["retrain"] == jobs["famr"]["metrics"]["retrain"]


def test_every_job_of_the_sweep_shares_one_cached_original_and_retrain(method_sweep):
    _, jobs, proc = method_sweep
    log = proc.stdout + proc.stderr
    assert log.count("No cached original model") == 0 and log.count("No cached retrain model") == 0
    assert len({r["cache"]["original"]["key"] for r in jobs.values()}) == 1
    assert len({r["cache"]["retrain"]["key"] for r in jobs.values()}) == 1
    assert all(r["cache"]["original"]["hit"] and r["cache"]["retrain"]["hit"] for r in jobs.values())


def test_forgetting_methods_beat_the_original_on_the_forgotten_class(method_sweep):
    _, jobs, _ = method_sweep
    original = jobs["famr"]["metrics"]["original"]["forget_test_acc"]
    left = {name: round(jobs[name]["metrics"]["unlearned"]["forget_test_acc"], 1) for name in METHODS}
    # The methods whose searched values (chosen on digits 3 and 8, never on 0) make them forget class 0.
    # FT's and SSD's best settings forgot one of the search's two classes and not the other, and keep
    # class 0 (docs/tuning.md#the-quickstart-class-search-every-method-10-trials): a finding, not a row to hide.
    forgetting = [name for name in METHODS if name not in ("finetune", "ssd")]
    assert all(left[name] < original - 40 for name in forgetting), str(left)


def test_compare_table_has_one_row_per_method(method_sweep):
    sweep, _, _ = method_sweep
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "summarize.py"), str(sweep), "--compare"], capture_output=True, text=True, check=True
    ).stdout
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert sorted(row.split("|")[1].strip() for row in rows) == sorted(METHODS)
    assert "Avg. Gap" in out and "RTE % of Retrain" in out
