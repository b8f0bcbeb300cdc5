"""Scale-out configs (docs/scaling.md): conf/hydra/launcher/{slurm,parallel}.yaml and conf/hydra/sweeper/optuna_gap.yaml.

The launchers extend a Hydra plugin's own config, so their tests skip when that plugin (an extra of
famr-cli: slurm, parallel) is not installed; optuna_gap is famr's own sweeper (famr_cli/tune).
"""

from __future__ import annotations

import csv
import math

import pytest
import yaml
from hydra import compose, initialize_config_dir

from conftest import NO_ROBUSTNESS, read_results, run_cli
from famr_cli.cli import CONFIG_DIR

TINY = ["train.epochs=2", "method.epochs=2", NO_ROBUSTNESS]


def _hydra_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True).hydra


def test_slurm_launcher_composes_with_our_defaults_and_takes_overrides():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    hydra = _hydra_cfg(["hydra/launcher=slurm"])
    launcher = hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.partition is None
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.cpus_per_task) == (1, 1, 8)
    assert (launcher.mem_gb, launcher.timeout_min) == (64, 240)
    assert launcher.submitit_folder == f"{hydra.sweep.dir}/.submitit/%j"  # submitit's logs sit in the sweep dir

    overrides = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4", "hydra.launcher.timeout_min=600"]
    overridden = _hydra_cfg(overrides).launcher
    assert (overridden.partition, overridden.gpus_per_node, overridden.timeout_min) == ("gpu", 4, 600)
    assert overridden.mem_gb == 64  # the rest keeps our defaults


def test_parallel_launcher_composes_as_joblib_with_two_processes():
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    launcher = _hydra_cfg(["hydra/launcher=parallel"]).launcher
    assert launcher._target_ == "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert (launcher.n_jobs, launcher.backend, launcher.prefer) == (2, "loky", "processes")
    assert _hydra_cfg(["hydra/launcher=parallel", "hydra.launcher.n_jobs=4"]).launcher.n_jobs == 4


def test_optuna_gap_sweeper_composes_as_famrs_own_sweeper_with_a_seeded_declared_space():
    sweeper = _hydra_cfg(["hydra/sweeper=optuna_gap"]).sweeper
    assert sweeper._target_ == "hydra_plugins.famr_tune.optuna_gap_sweeper.OptunaGapSweeper"
    assert (sweeper.direction, sweeper.n_trials, sweeper.seed, sweeper.params) == ("minimize", 20, 0, None)
    assert sweeper.max_retain_drop == 10.0


@pytest.mark.slow
def test_parallel_sweep_shares_one_original_and_a_bad_job_fails_alone_with_its_exit_code(tmp_path):
    """One joblib sweep (its two worker processes cost a famr import each) for both behaviours: the two
    good jobs start at once on one original model, and the two with an unknown class fail in the workers."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    # Hydra runs the product with the first override outermost: the two class-1 jobs are dispatched first, together.
    overrides = ["-m", "hydra/launcher=parallel", "forget.classes=[1],[42]", "method.lam=0.1,1", *TINY, f"hydra.sweep.dir={sweep}"]
    proc = run_cli(overrides, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]  # the bad jobs' own exit code, from a worker process
    assert "2 of 4 sweep jobs did not finish ok" in proc.stdout + proc.stderr
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "failed"]
    assert all("42" in r["error"] for r in rows[2:])
    assert "- job 2 (failed):" in (sweep / "summary.md").read_text()
    lams = []
    for job in ("0", "1"):
        results = read_results(sweep / job)
        assert results["status"] == "ok", results.get("error")
        lams.append(results["config"]["method"]["lam"])
    assert sorted(lams) == [0.1, 1.0]
    # Both jobs start at once; the cache must make one of them wait for the other's original model.
    originals = [p for p in (tmp_path / "cache" / "original").iterdir() if p.is_dir()]
    assert len(originals) == 1, [p.name for p in originals]
    # One entry alone does not prove one training (a second save replaces the first): count the trainings.
    logs = [(sweep / job / "famr.log").read_text() for job in ("0", "1")]
    assert sum(log.count("No cached original model") for log in logs) == 1, "the original model was trained more than once"


def _optuna_sweep(tmp_path, reference: str, *extra: str):
    """A 2-trial Optuna study of GA on digits; returns its sweep dir once famr-run exited 0. GA, because its
    declared space (1-20 ascent steps) keeps a trial short, where FAMR's 10-200 epochs took 7.5 s a trial (cProfile);
    famr-tune's test searches FAMR's space."""
    sweep = tmp_path / "sweep"
    overrides = ["-m", "hydra/sweeper=optuna_gap", "hydra.sweeper.n_trials=2", "method=grad_ascent", reference, *extra, *TINY]
    proc = run_cli([*overrides, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep


@pytest.mark.slow
def test_optuna_sweep_minimises_the_avg_gap_and_writes_its_best_value(tmp_path):
    # No trial is rejected for the retained accuracy it costs (GA at a random rate may cost all of it).
    sweep = _optuna_sweep(tmp_path, "evaluate.reference=retrain", "hydra.sweeper.max_retain_drop=100")
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert math.isfinite(best["best_value"])
    assert set(best["best_params"]) == {"method.lr", "method.epochs"}  # GA's declared space
    gaps = []
    for job in ("0", "1"):
        results = read_results(sweep / job)
        assert results["status"] == "ok", results.get("error")
        gaps.append(results["gaps"]["avg_gap"])
    assert best["best_value"] == pytest.approx(min(gaps))  # the sweeper minimised what results.json reports


@pytest.mark.slow
def test_optuna_sweep_goes_on_after_a_trial_without_an_objective(tmp_path):
    # No Retrain reference, so gaps.avg_gap is missing and every trial's objective is +inf (as for a diverged job).
    sweep = _optuna_sweep(tmp_path, "evaluate.reference=none")
    assert (sweep / "1" / "results.json").is_file()  # the second trial still ran
    assert yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_value"] == math.inf
