"""The console script: runs from any directory, writes results (bad input: tests/test_bad_input.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import run_cli
from famr_cli import source_commit
from famr_cli.results import finished_results, write_results
from famr_cli.source_commit import checkout_commit

CORE_KEYS = {"status", "method", "config", "metrics", "gaps", "timing", "certificate", "cache"}
METRIC_KEYS = {"test_acc", "forget_train_acc", "forget_test_acc", "retain_train_acc", "retain_test_acc", "per_class_test_acc"}


@pytest.mark.slow
def test_info_and_cfg_job_work_outside_the_repo(tmp_path):
    info = run_cli(["--info"], cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert "famr_cli/conf" in info.stdout  # configs found through the package
    job = run_cli(["--cfg", "job", "method.lam=0.5"], cwd=tmp_path)
    assert job.returncode == 0, job.stderr
    assert "lam: 0.5" in job.stdout and "name: famr" in job.stdout


@pytest.mark.slow
def test_unknown_override_key_gets_hydras_error(tmp_path):
    proc = run_cli(["method.lamda=1"], cwd=tmp_path)
    assert proc.returncode != 0
    assert "lamda" in proc.stderr


def test_quickstart_meets_the_acceptance_figures(quickstart_runs):
    """The end-to-end bar on digits: learn well, forget most of the class, keep the rest, at FAMR's searched
    values, which were chosen on digits 3 and 8 on a validation split, never on class 0 (docs/results.md)."""
    _, results = quickstart_runs[0]
    assert CORE_KEYS <= results.keys()
    assert results["status"] == "ok" and results["method"] == "famr"
    original, unlearned = results["metrics"]["original"], results["metrics"]["unlearned"]
    assert METRIC_KEYS <= original.keys() and METRIC_KEYS <= unlearned.keys()
    assert original["test_acc"] >= 90.0
    assert unlearned["forget_test_acc"] <= 40.0  # 30.6 % measured (2 threads); 100 % before unlearning
    assert abs(unlearned["retain_test_acc"] - original["retain_test_acc"]) <= 3.0
    assert unlearned["forget_train_acc"] < original["forget_train_acc"] - 50
    assert results["certificate"]["param_dist"] > 0
    assert results["timing"]["unlearn_s"] > 0 and results["timing"]["train_s"] > 0
    assert len(original["per_class_test_acc"]) == 10


def test_second_run_hits_the_cache_and_says_so(quickstart_runs):
    (first_proc, first), (second_proc, second) = quickstart_runs
    # Retrain is cached before the first run (tests/conftest.py says why); a run that trains it: tests/test_reference.py.
    assert first["cache"]["original"]["hit"] is False and first["cache"]["retrain"]["hit"] is True
    assert second["cache"]["original"]["hit"] is True and second["cache"]["retrain"]["hit"] is True
    assert second["cache"]["original"]["key"] == first["cache"]["original"]["key"]
    assert "loaded from cache" in second_proc.stderr + second_proc.stdout
    assert second["timing"]["train_s"] < first["timing"]["train_s"] / 5
    assert second["metrics"]["original"] == first["metrics"]["original"]


def test_results_name_the_commit_of_the_code_that_ran(quickstart_runs):
    _, results = quickstart_runs[0]
    # The editable install's checkout HEAD here; "unknown" when the tests run against an installed wheel.
    assert results["versions"]["commit"] == checkout_commit(Path(source_commit.__file__).resolve())


def test_a_commit_is_named_only_for_a_file_the_checkout_tracks(tmp_path):
    module = tmp_path / "module.py"
    module.write_text("x = 1\n")
    assert checkout_commit(module) == "unknown"  # no checkout at all
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "tracked.txt").write_text("a\n")
    subprocess.run([*git, "add", "tracked.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], check=True)
    # An untracked file inside a checkout (a wheel in a venv inside a project repo) does not take the project's HEAD.
    assert checkout_commit(module) == "unknown"
    subprocess.run([*git, "add", "module.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "second"], check=True)
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert checkout_commit(module) == head


def test_console_table_prints_the_headline_figures(quickstart_runs):
    proc, _ = quickstart_runs[0]
    for label in ("original", "unlearned", "forget-test acc", "retain-test acc", "unlearn time"):
        assert label in proc.stdout
    # progress=auto: no progress bars when the output is not a terminal
    assert "it/s" not in proc.stdout + proc.stderr and "s/it" not in proc.stdout + proc.stderr


def test_finished_results_match_only_an_ok_job_of_the_same_config(tmp_path):
    config = {"method": {"name": "famr", "lam": 0.1}, "seed": 0, "skip_finished": False}
    write_results(tmp_path, {"status": "ok", "config": config, "gaps": {"avg_gap": float("nan")}})
    assert finished_results(tmp_path, {**config, "skip_finished": True})["gaps"] == {"avg_gap": None}
    assert finished_results(tmp_path, {**config, "seed": 1}) is None
    assert finished_results(tmp_path, {**config, "method": {"name": "famr", "lam": 0.3}}) is None
    write_results(tmp_path, {"status": "interrupted", "config": config})
    assert finished_results(tmp_path, config) is None
    (tmp_path / "results.json").write_text('{"status": "ok", "conf')
    assert finished_results(tmp_path, config) is None
    assert finished_results(tmp_path / "missing", config) is None


def test_the_host_names_the_slurm_job_as_sacct_does(monkeypatch):
    from famr_cli.host import SLURM_KEYS, describe_run_host, run_host

    for name in SLURM_KEYS.values():
        monkeypatch.delenv(name, raising=False)
    assert set(run_host()) == {"node"} and describe_run_host(run_host()).startswith("node ")
    monkeypatch.setenv("SLURM_JOB_ID", "15")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "12")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURMD_NODENAME", "n1")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    host = run_host()
    assert host["node"] == "n1" and host["slurm"]["sacct_id"] == "12_3" and host["slurm"]["job_id"] == "15"
    assert describe_run_host(host) == "node n1, SLURM job 12_3 (id 15, restart 1)"
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID")
    assert run_host()["slurm"]["sacct_id"] == "15"
