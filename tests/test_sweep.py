"""Multiruns: one cached original and Retrain for all jobs (even parallel ones), and the sweep summary."""

from __future__ import annotations

import csv
import json
import multiprocessing
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from conftest import NO_ROBUSTNESS, read_results, run_cli
from famr_cli.cache import build_once
from famr_cli.cli import objective_value
from famr_cli.runtime import threads_per_job
from famr_cli.sweep.callback import sweep_group
from famr_cli.sweep.files import write_summary
from wandb_records import run_info

REPO = Path(__file__).resolve().parents[1]
TINY = ["train.epochs=2", "method.epochs=2", "progress=false"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _entries(cache: Path, kind: str) -> list[Path]:
    folder = cache / kind
    return [p for p in folder.iterdir() if p.is_dir() and ".bad-" not in p.name and not p.name.startswith(".")] if folder.is_dir() else []


@pytest.mark.slow
def test_lambda_sweep_trains_original_and_retrain_once_and_writes_summary_and_plots(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", *TINY, "method.lam=0.01,0.1,1", "evaluate.reference=retrain", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert output.count("No cached original model") == 1 and output.count("No cached retrain model") == 1
    assert len(_entries(tmp_path / "cache", "original")) == 1 and len(_entries(tmp_path / "cache", "retrain")) == 1
    hits = [read_results(sweep / str(i))["cache"] for i in range(3)]
    assert read_results(sweep / "0")["device_name"].endswith("threads")  # the CPU model and torch's thread count
    assert [h["original"]["hit"] for h in hits] == [False, True, True]
    assert [h["retrain"]["hit"] for h in hits] == [False, True, True]

    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [r["method.lam"] for r in rows] == ["0.01", "0.1", "1"] and {r["status"] for r in rows} == {"ok"}
    for i, row in enumerate(rows):
        unlearned = read_results(sweep / str(i))["metrics"]["unlearned"]
        assert float(row["forget_test_acc"]) == pytest.approx(unlearned["forget_test_acc"])
        assert float(row["retain_test_acc"]) == pytest.approx(unlearned["retain_test_acc"])
    markdown = (sweep / "summary.md").read_text()
    assert "3 jobs, 3 ok, 0 not ok" in markdown and "| original |" in markdown and "| retrain |" in markdown
    for plot in ("accuracy_vs_lam.png", "tradeoff.png"):
        data = (sweep / plot).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, plot

    # A sweep killed during job 2, run again with skip_finished=true: jobs 0 and 1 are kept as they were, job 2 runs.
    kept = [(sweep / str(i) / "results.json").read_text() for i in range(2)]
    (sweep / "2" / "results.json").write_text(json.dumps({"status": "interrupted", "method": "famr", "exit_code": 143}))
    args = ["-m", *TINY, "method.lam=0.01,0.1,1", "evaluate.reference=retrain", f"hydra.sweep.dir={sweep}", "skip_finished=true"]
    proc = run_cli(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (proc.stdout + proc.stderr).count("already finished ok") == 2
    assert [(sweep / str(i) / "results.json").read_text() for i in range(2)] == kept
    assert read_results(sweep / "2")["status"] == "ok" and read_results(sweep / "2")["config"]["method"]["lam"] == 1


def _slow_build(args):
    counter, entry = args
    return build_once(Path(entry), "test entry", lambda: _read(counter), lambda: _write(counter))


def _read(counter: str) -> str | None:
    path = Path(counter)
    return path.read_text() if path.exists() else None


def _write(counter: str) -> str:
    builds = Path(counter + ".builds")
    with builds.open("a") as fh:
        fh.write("built\n")
    time.sleep(1.0)  # long enough that every other process arrives while this one builds
    Path(counter).write_text("value")
    return "value"


@pytest.mark.slow
def test_processes_missing_one_entry_at_once_build_it_once(tmp_path):
    counter = str(tmp_path / "entry.value")
    # Forked, not spawned: four processes all the same, without four interpreters importing famr (~5 s each).
    with multiprocessing.get_context("fork").Pool(4) as pool:
        values = pool.map(_slow_build, [(counter, str(tmp_path / "cache" / "kind" / "key"))] * 4)
    assert values == ["value"] * 4
    assert Path(counter + ".builds").read_text() == "built\n"


@pytest.mark.slow
def test_two_famr_runs_started_together_train_the_original_once(tmp_path):
    # Two forks of the session's server at once: two famr-run processes, each with its own pid and files.
    with ThreadPoolExecutor(2) as pool:
        procs = list(
            pool.map(
                lambda name: run_cli([*TINY, "evaluate.reference=none", NO_ROBUSTNESS, f"hydra.run.dir={tmp_path / name}"], tmp_path), "ab"
            )
        )
    outputs = [p.stdout + p.stderr for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert sum(o.count("No cached original model") for o in outputs) == 1
    # One of the two waits for the other's original; which one waits for which later entry (an
    # evaluation, say) depends on who gets there first.
    assert sum("building the original model at" in o for o in outputs) == 1
    assert len(_entries(tmp_path / "cache", "original")) == 1
    hits = sorted(read_results(tmp_path / name)["cache"]["original"]["hit"] for name in ("a", "b"))
    assert hits == [False, True]


@pytest.mark.slow
def test_sweep_jobs_share_one_wandb_group_and_the_summary_is_logged(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", *TINY, NO_ROBUSTNESS, "logger=wandb", "method.lam=0.1,1", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    infos = [run_info(f) for f in sorted(sweep.rglob("offline-run-*/run-*.wandb"))]
    assert len(infos) == 3  # two jobs and the summary run
    assert {i["group"] for i in infos} == {sweep_group(sweep)}
    assert sorted(i["job_type"] for i in infos) == ["sweep-summary", "unlearn", "unlearn"]
    tables = list(sweep.rglob("files/media/table/sweep/summary_*.table.json"))
    assert len(tables) == 1 and len(json.loads(tables[0].read_text())["data"]) == 2
    assert len(list(sweep.rglob("files/media/images/sweep/tradeoff_*.png"))) == 1


def _fake_job(sweep: Path, num: int, overrides: list[str], results: dict | None) -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if results is not None:
        (job / "results.json").write_text(json.dumps(results))


def _ok_results(lam: float, forget: float, retain: float) -> dict:
    scores = {"forget_test_acc": forget, "retain_test_acc": retain, "test_acc": retain - 1, "forget_train_acc": forget}
    reference = {
        "original": {"forget_test_acc": 95.0, "retain_test_acc": 90.0},
        "retrain": {"forget_test_acc": 0.0, "retain_test_acc": 91.0},
    }
    return {
        "status": "ok",
        "method": "famr",
        "metrics": {"unlearned": scores, **reference},
        "gaps": {"avg_gap": lam},
        "timing": {"unlearn_s": 2.0, "eval_s": 1.0},
        "cache": {"original": {"key": "k", "hit": True}},
    }


@pytest.mark.slow
def test_summarize_script_rebuilds_the_summary_of_a_finished_sweep_and_counts_missing_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    _fake_job(sweep, 0, ["method.lam=0.1", "progress=false"], _ok_results(0.1, 10.0, 88.5))
    _fake_job(sweep, 1, ["method.lam=1", "progress=false"], _ok_results(1.0, 40.0, 89.5))
    _fake_job(sweep, 2, ["method.lam=10", "progress=false"], None)  # killed before it wrote results.json
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "summarize.py"), str(sweep)], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr  # a missing job is not ok
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [(r["method.lam"], r["status"], r["forget_test_acc"], r["retain_test_acc"]) for r in rows] == [
        ("0.1", "ok", "10.0", "88.5"),
        ("1", "ok", "40.0", "89.5"),
        ("10", "missing", "", ""),
    ]
    assert "progress" not in rows[0]  # an override every job shares is not a swept key
    assert "3 jobs, 2 ok, 1 not ok" in proc.stdout and "| 1 | 1 | famr | D_f only | 40.00 | 89.50 |" in proc.stdout
    assert (sweep / "accuracy_vs_lam.png").read_bytes().startswith(PNG_MAGIC)
    assert (sweep / "tradeoff.png").read_bytes().startswith(PNG_MAGIC)


@pytest.mark.slow
def test_a_method_sweep_summary_has_one_method_column_and_labels_points_by_method(tmp_path):
    sweep = tmp_path / "sweep"
    for num, method in enumerate(("famr", "finetune")):
        results = {**_ok_results(0.1, 10.0 * num, 88.0), "method": method}
        _fake_job(sweep, num, [f"method={method}", "dataset.root=/some/long/path"], results)
    summary, files = write_summary(sweep)
    header = (sweep / "summary.csv").read_text().splitlines()[0].split(",")
    assert header.count("method") == 1 and "dataset.root" not in header
    assert [row["method"] for row in summary.rows()] == ["famr", "finetune"]
    assert {p.name for p in files} == {"summary.csv", "summary.md", "tradeoff.png"}  # no numeric key: no accuracy_vs plot


@pytest.mark.parametrize(
    ("setting", "jobs", "cores", "expected"),
    [("auto", 1, 8, None), ("auto", 2, 8, 4), ("auto", 3, 2, 1), (4, 2, 8, 4), ("2", 1, 8, 2)],
)
def test_threads_per_job_shares_cores_between_parallel_jobs(setting, jobs, cores, expected):
    assert threads_per_job(setting, jobs, cores) == expected


@pytest.mark.parametrize("setting", [0, -1, "many", 1.5])
def test_bad_threads_setting_is_one_sentence(setting):
    with pytest.raises(Exception, match="threads=auto or a whole number"):
        threads_per_job(setting, 1, 2)


def test_objective_is_the_configured_results_value_and_inf_when_a_job_failed():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"objective": "gaps.avg_gap"})
    assert objective_value(cfg, {"gaps": {"avg_gap": 2.5}}) == 2.5
    assert objective_value(cfg, None) == float("inf")  # the worst value, so Optuna goes on
    assert objective_value(cfg, {"gaps": {"avg_gap": float("nan")}}) == float("inf")
    assert objective_value(OmegaConf.create({"objective": "metrics.unlearned.UA"}), {"metrics": {"unlearned": {"UA": 90}}}) == 90.0


@pytest.mark.slow
def test_a_lambda_sweep_with_robustness_figures_plots_forgotten_against_relearned(tmp_path):
    sweep = tmp_path / "sweep"
    for num, lam in enumerate((0.1, 1.0)):
        results = _ok_results(lam, 5.0 * num, 88.0)
        relearn = {"forget_acc_before": 5.0 * num, "full_k5_forget_acc": 40.0 - 10 * num}
        results["robustness"] = {
            "headline": {"relearn_k": 5, "relearn_forget_acc": relearn["full_k5_forget_acc"], "relearn_residual": 20.0 - 10 * num},
            "unlearned": {"relearn": relearn},
            "original": {"relearn": {"forget_acc_before": 95.0, "full_k5_forget_acc": 97.0}},
            "retrain": {"relearn": {"forget_acc_before": 0.0, "full_k5_forget_acc": 20.0}},
        }
        _fake_job(sweep, num, [f"method.lam={lam}"], results)
    summary, files = write_summary(sweep)
    assert (sweep / "relearning.png").read_bytes().startswith(PNG_MAGIC) and sweep / "relearning.png" in files
    header = (sweep / "summary.csv").read_text().splitlines()[0].split(",")
    assert {"relearn_forget_acc", "relearn_residual", "privleak"} <= set(header)
    assert [row["relearn_residual"] for row in summary.rows()] == [20.0, 10.0]
