#!/usr/bin/env python3
"""famr on a real SLURM cluster, measured: a λ sweep as jobs, a requeued job, famr-tune with k parallel trials.

Needs a running cluster (``scripts/slurm_local.sh start``; SLURM_CONF is taken from the environment, else the
script's default state dir). Prints one block of figures per check; everything goes under ``--out``.

    python scripts/slurm_acceptance.py --out /tmp/famr-slurm-check --tune-cache outputs/cache
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
LAUNCHER = [
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=null",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=30",
]
QUICK = ["experiment=quickstart", "progress=false", "threads=1"]


def env_for(cache: Path) -> dict[str, str]:
    conf = os.environ.get("SLURM_CONF") or str(Path(os.environ.get("FAMR_SLURM_DIR", "~/.famr-slurm")).expanduser() / "slurm.conf")
    return {**os.environ, "SLURM_CONF": conf, "FAMR_CACHE_DIR": str(cache), "WANDB_MODE": "offline"}


def sacct(env: dict[str, str], job: str) -> dict[str, str]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", job], env=env, capture_output=True, text=True).stdout
    return dict(line.split("|", 1) for line in out.splitlines() if "|" in line)


def lambda_sweep(out: Path) -> None:
    env, sweep = env_for(out / "cache"), out / "lambda"
    start = time.perf_counter()
    proc = subprocess.run([str(BIN / "famr-run"), "-m", *LAUNCHER, *QUICK, "method.lam=0.01,0.1,1", f"hydra.sweep.dir={sweep}"], env=env)
    wall = time.perf_counter() - start
    jobs = [json.loads((sweep / str(n) / "results.json").read_text()) for n in range(3)]
    ids = [j["host"]["slurm"]["sacct_id"] for j in jobs]
    logs = [(sweep / str(n) / "famr.log").read_text() for n in range(3)]
    print("\n## 3-point λ sweep through SLURM")
    print(f"exit {proc.returncode}, {wall:.0f} s; jobs {ids}; sacct: {sacct(env, ids[0].split('_')[0])}")
    print(
        f"jobs that trained the original: {sum('No cached original model' in log for log in logs)}; that trained Retrain: "
        f"{sum('No cached retrain model' in log for log in logs)}; waited on a lock: {sum('waiting for it instead' in log for log in logs)}"
    )
    rows = (sweep / "summary.csv").read_text().strip().splitlines()
    gaps = [(j["config"]["method"]["lam"], round(j["gaps"]["avg_gap"], 2)) for j in jobs]
    print(f"summary.csv: {len(rows) - 1} rows; λ and Avg. Gap: {gaps}")


def requeue(out: Path) -> None:
    env, sweep = env_for(out / "requeue-cache"), out / "requeue"
    run = ["method=grad_ascent", "method.lr=0.001", "train.epochs=40", "evaluate.reference=none", *QUICK]
    driver = subprocess.Popen([str(BIN / "famr-run"), "-m", *LAUNCHER, *run, f"hydra.sweep.dir={sweep}"], env=env)
    log = sweep / "0" / "famr.log"
    while not (log.is_file() and "original model: epoch 6/40" in log.read_text()):
        time.sleep(0.5)
    job = next(line.split("SLURM job ")[1].rstrip(".") for line in log.read_text().splitlines() if "SLURM job " in line)
    subprocess.run(["scontrol", "requeue", job], env=env, check=True)
    while "JobState=PENDING" not in subprocess.run(["scontrol", "show", "job", job], env=env, capture_output=True, text=True).stdout:
        time.sleep(0.5)
    subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], env=env, check=True)
    code = driver.wait()
    plain_cache = out / "requeue-plain-cache"
    subprocess.run([str(BIN / "famr-run"), *run, f"hydra.run.dir={out / 'requeue-plain'}"], env=env_for(plain_cache), check=True)
    meta = json.loads(next((out / "requeue-cache" / "original").glob("*/meta.json")).read_text())
    plain = json.loads(next((plain_cache / "original").glob("*/meta.json")).read_text())
    a, b = (json.loads((d / "results.json").read_text()) for d in (sweep / "0", out / "requeue-plain"))
    ua = (a["metrics"]["unlearned"]["UA"], b["metrics"]["unlearned"]["UA"])
    print("\n## A job requeued mid-training (scontrol requeue at epoch 6+ of 40)")
    print(
        f"driver exit {code}; job {job}; resumed from epoch {meta['metrics'].get('resumed_from_epoch')}; "
        f"restart_count {a['host']['slurm'].get('restart_count')}; status {a['status']}"
    )
    print(
        f"weights identical to an uninterrupted run: {meta['weights_sha256'] == plain['weights_sha256']}; "
        f"metrics identical: {a['metrics'] == b['metrics']}; UA {ua[0]:.2f} vs {ua[1]:.2f}"
    )


def tune(out: Path, cache: Path, name: str, k: int, trials: int, kill_after: int | None = None) -> float:
    args = [str(BIN / "famr-tune"), "--dir", str(out / name), "--methods", "famr", "--trials", str(trials), "--parallel-trials", str(k)]
    args += ["--no-write", "dataset.val_per_class=30", *QUICK, *LAUNCHER]
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env_for(cache), start_new_session=True)
    trials_file = out / name / "quickstart" / "class" / "famr" / "trials.jsonl"
    if kill_after is not None:
        while not (trials_file.is_file() and len(trials_file.read_text().splitlines()) >= kill_after):
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGTERM)  # SIGTERM: a job started in the background may ignore SIGINT
    proc.wait()
    return time.perf_counter() - start


def study_figures(out: Path, name: str) -> str:
    study = out / name / "quickstart" / "class" / "famr"
    trials = [json.loads(line) for line in (study / "trials.jsonl").read_text().splitlines()]
    distinct = {json.dumps(t["params"], sort_keys=True) for t in trials}
    dirs = [t["run_dir"] for t in trials]
    best = min(t["objective"] for t in trials if t["state"] == "ok")
    return f"{len(trials)} trials, {len(distinct)} distinct settings, {len(set(dirs))} distinct first job dirs, best {best:.3f}"


def parallel_trials(out: Path, cache: Path) -> None:
    print("\n## famr-tune, FAMR on digits, 4 trials x 2 forget sets through SLURM (1 CPU per job, 2 cores)")
    for name, k in (("k1", 1), ("k2", 2)):
        wall = tune(out, cache, name, k, 4)
        print(f"k = {k}: {wall:.0f} s; {study_figures(out, name)}")
    first = tune(out, cache, "k2-killed", 2, 6, kill_after=2)
    print(f"k = 2, 6 trials, killed (SIGTERM) once 2 trials were recorded, after {first:.0f} s: {study_figures(out, 'k2-killed')}")
    again = tune(out, cache, "k2-killed", 2, 6)
    print(f"resumed: {again:.0f} s; {study_figures(out, 'k2-killed')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the runs")
    parser.add_argument("--tune-cache", type=Path, default=Path("outputs/cache"), help="cache holding the digits models famr-tune uses")
    parser.add_argument("--only", default="lambda,requeue,tune", help="comma-separated checks")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    chosen = args.only.split(",")
    if "lambda" in chosen:
        lambda_sweep(args.out)
    if "requeue" in chosen:
        requeue(args.out)
    if "tune" in chosen:
        parallel_trials(args.out, args.tune_cache.resolve())


if __name__ == "__main__":
    main()
