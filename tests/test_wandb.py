"""wandb, offline into a temp dir: the run holds the final metrics; every job gets its own run."""

from __future__ import annotations

import json

import pytest

from conftest import NO_ROBUSTNESS, cli_env, read_results, run_cli
from wandb_records import exit_code, history, summary

TINY = ["train.epochs=2", "method.epochs=3", "logger=wandb"]


def _run_files(root):
    return sorted(root.rglob("offline-run-*/run-*.wandb"))


@pytest.mark.slow
def test_offline_run_holds_config_curves_final_metrics_and_per_class_table(tmp_path):
    proc = run_cli([*TINY, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = read_results(tmp_path / "run")
    (run_file,) = _run_files(tmp_path / "run")
    final = summary(run_file)
    for key in ("forget_test_acc", "retain_test_acc", "test_acc"):
        assert final[f"metrics/unlearned/{key}"] == pytest.approx(results["metrics"]["unlearned"][key])
    assert final["timing/unlearn_s"] == pytest.approx(results["timing"]["unlearn_s"])
    for key in ("grad_norm", "stationarity_residual", "drift_kl_mean"):  # the certificate (docs/theory.md §9)
        assert final[f"certificate/{key}"] == pytest.approx(results["certificate"][key])
    (table_file,) = run_file.parent.glob("files/media/table/per_class_test_acc_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["class", "name", "forgotten", "original", "unlearned", "retrain"]
    assert [row[4] for row in table["data"]] == pytest.approx(results["metrics"]["unlearned"]["per_class_test_acc"])
    assert [row[2] for row in table["data"]].count(True) == 1
    rows = history(run_file)
    assert [r["train/epoch"] for r in rows if "train/loss" in r] == [1, 2]
    assert [r["unlearn/epoch"] for r in rows if "unlearn/forget_loss" in r] == [1, 2, 3]
    assert exit_code(run_file) == 0
    assert "wandb sync" in proc.stdout + proc.stderr  # tells the user how to upload later


@pytest.mark.slow
def test_multirun_jobs_never_share_a_wandb_run_even_when_one_fails(tmp_path):
    proc = run_cli(["-m", *TINY, NO_ROBUSTNESS, "forget.classes=[42],[1]", f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path)
    assert proc.returncode == 2  # the sweep reports the bad job at the end...
    # Each job's run lives in its own dir; the sweep's summary run (sweep/wandb/) is tested in test_sweep.py.
    files = [f for f in _run_files(tmp_path / "sweep") if f.relative_to(tmp_path / "sweep").parts[0].isdigit()]
    assert len(files) == 2, "each job must get its own wandb run"
    assert sorted(exit_code(f) for f in files) == [0, 2], "both runs were finished, the failed one with its exit code"
    assert read_results(tmp_path / "sweep" / "0")["status"] == "failed"
    assert read_results(tmp_path / "sweep" / "1")["status"] == "ok"  # ...but the jobs after it still ran
    assert "1 of 2 sweep jobs did not finish ok" in proc.stderr + proc.stdout


@pytest.mark.slow
def test_unreachable_wandb_never_fails_the_experiment(tmp_path):
    env = cli_env(tmp_path, WANDB_MODE="online", WANDB_API_KEY="", WANDB_BASE_URL="http://127.0.0.1:9", WANDB_INIT_TIMEOUT="5")
    proc = run_cli([*TINY, NO_ROBUSTNESS, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_results(tmp_path / "run")["status"] == "ok"
    output = proc.stdout + proc.stderr
    assert "continuing without it" in output and "wandb sync" in output
