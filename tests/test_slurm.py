"""The SLURM tier: famr against a real scheduler (``make test-slurm``; ``scripts/slurm_local.sh start`` first).

Every test here meets slurmctld through Hydra's submitit launcher: a sweep's points become SLURM jobs that share
the model cache, a job requeued mid-training resumes from its last saved epoch, and famr-reproduce and famr-tune
run their sweeps through the cluster. Without a reachable cluster the whole module is skipped with one line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import cli_env, run_cli

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

FAMR_RUN = str(Path(sys.executable).with_name("famr-run"))
# The local node has 2 CPUs, no GPU and little memory: two 1-CPU jobs at a time.
LAUNCHER = [
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=null",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=15",
]
QUICK = ["experiment=quickstart", "progress=false", "threads=1", "evaluate.robustness.enabled=false", "evaluate.certificate=false"]


def _slurm_conf() -> Path:
    chosen = os.environ.get("SLURM_CONF")
    return Path(chosen) if chosen else Path(os.environ.get("FAMR_SLURM_DIR", "~/.famr-slurm")).expanduser() / "slurm.conf"


@pytest.fixture(scope="module")
def slurm_env(tmp_path_factory) -> dict[str, str]:
    """famr's test environment with SLURM_CONF pointing at the running cluster; the module skips without one."""
    conf = _slurm_conf()
    if not conf.is_file() or shutil.which("sinfo") is None:
        pytest.skip(f"no local SLURM cluster ({conf} missing): start one with scripts/slurm_local.sh start")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    try:
        states = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True, timeout=20).stdout.split()
    except (OSError, subprocess.SubprocessError):
        states = []
    if not any(s.startswith(("idle", "mix", "alloc")) for s in states):
        pytest.skip(f"the SLURM cluster of {conf} does not answer with a usable node: scripts/slurm_local.sh status")
    return {"SLURM_CONF": str(conf)}


def _env(tmp: Path, slurm_env: dict[str, str], **extra: str) -> dict[str, str]:
    return cli_env(tmp, **slurm_env, **extra)


def _famr_run(args: list[str], tmp: Path, env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([FAMR_RUN, *args], cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)


def _scontrol(env: dict[str, str], *args: str) -> str:
    return subprocess.run(["scontrol", *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=30, check=True).stdout


def _sacct_states(env: dict[str, str], job: str) -> dict[str, str]:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", job], env={**os.environ, **env}, capture_output=True, text=True, timeout=30
    ).stdout
    return dict(line.split("|", 1) for line in out.splitlines() if "|" in line)


def _results(job_dir: Path) -> dict:
    return json.loads((job_dir / "results.json").read_text())


def test_a_sweep_becomes_slurm_jobs_that_train_one_original_and_write_the_summary(tmp_path, slurm_env):
    env = _env(tmp_path, slurm_env)
    sweep = tmp_path / "sweep"
    args = ["-m", *LAUNCHER, *QUICK, "train.epochs=3", "evaluate.reference=none", "method.lam=0.01,0.1,1", f"hydra.sweep.dir={sweep}"]
    proc = _famr_run(args, tmp_path, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = [_results(sweep / str(n)) for n in range(3)]
    assert [j["status"] for j in jobs] == ["ok"] * 3
    # One job array: each point a task, named as sacct names it, on the cluster's node.
    ids = [j["host"]["slurm"]["sacct_id"] for j in jobs]
    array = {i.split("_")[0] for i in ids}
    assert len(set(ids)) == 3 and len(array) == 1 and all(j["host"]["node"] for j in jobs)
    assert set(_sacct_states(slurm_env, array.pop()).values()) == {"COMPLETED"}
    # The jobs share the cache: the original is trained by one of them; the others wait on its lock or load it.
    logs = [(sweep / str(n) / "famr.log").read_text() for n in range(3)]
    assert sum("No cached original model" in log for log in logs) == 1
    assert len({j["cache"]["original"]["key"] for j in jobs}) == 1 and sum(j["cache"]["original"]["hit"] for j in jobs) == 2
    assert all(f"SLURM job {i}" in log for i, log in zip(ids, logs))
    assert len((sweep / "summary.csv").read_text().strip().splitlines()) == 1 + 3


def _wait_for(predicate, what: str, timeout: float = 300.0, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_a_requeued_job_resumes_from_its_last_epoch_and_ends_as_an_uninterrupted_run(tmp_path, slurm_env):
    env = _env(tmp_path, slurm_env)
    sweep = tmp_path / "sweep"
    run = ["method=grad_ascent", "method.lr=0.001", "train.epochs=40", "evaluate.reference=none", *QUICK]
    driver = subprocess.Popen(
        [FAMR_RUN, "-m", *LAUNCHER, *run, f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        log = sweep / "0" / "famr.log"
        _wait_for(lambda: log.is_file() and "original model: epoch 6/40" in log.read_text(), "epoch 6 of the original's training")
        job = _wait_for(
            lambda: next((line.split("SLURM job ")[1].rstrip(".") for line in log.read_text().splitlines() if "SLURM job " in line), None),
            "the job id",
        )
        _scontrol(slurm_env, "requeue", job)
        # A requeued job waits for a begin time slurmctld sets; the test lets it start again at once.
        _wait_for(lambda: "JobState=PENDING" in _scontrol(slurm_env, "show", "job", job), "the job to be requeued", timeout=120)
        _scontrol(slurm_env, "update", f"jobid={job}", "StartTime=now")
        out, err = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, err[-3000:]
    text = log.read_text()
    # The first run stopped on SIGTERM with the documented message; the second resumed where the first saved.
    assert "Interrupted by SIGTERM" in text and "restart 1" in text
    resumed = int(text.split("from its saved state after epoch ")[1].split(" ")[0])
    assert 6 <= resumed < 40
    results = _results(sweep / "0")
    assert results["status"] == "ok" and results["host"]["slurm"]["restart_count"] == "1"
    meta = json.loads(next((tmp_path / "cache" / "original").glob("*/meta.json")).read_text())
    assert meta["metrics"]["resumed_from_epoch"] == resumed
    # Nothing lost, nothing changed: the same model and figures as a run that was never interrupted.
    plain = run_cli([*run, f"hydra.run.dir={tmp_path / 'plain'}", f"cache_dir={tmp_path / 'plain-cache'}"], cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr[-2000:]
    uninterrupted = _results(tmp_path / "plain")
    other = json.loads(next((tmp_path / "plain-cache" / "original").glob("*/meta.json")).read_text())
    assert meta["weights_sha256"] == other["weights_sha256"] and results["metrics"] == uninterrupted["metrics"]


def test_famr_reproduce_and_famr_tune_run_their_sweeps_through_the_cluster(tmp_path, slurm_env):
    # famr-reproduce passes its key=value arguments to every sweep: here the launcher.
    env = _env(tmp_path, slurm_env)
    script = Path(sys.executable).with_name("famr-reproduce")
    out, runs = tmp_path / "tables", tmp_path / "runs"
    args = [str(script), "--profile", "smoke", "--out", str(out), "--runs", str(runs), *LAUNCHER, "threads=1"]
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    methods = sorted((runs / "smoke" / "quickstart" / "methods").glob("[0-9]*/results.json"))
    assert len(methods) == 6 and all(json.loads(p.read_text())["host"].get("slurm") for p in methods)
    assert (out / "smoke_quickstart.md").is_file() and (out / "smoke_quickstart_lambda.md").is_file()

    # famr-tune: two trials at once, each a job per forget set, against one journal; a rerun runs nothing.
    tune = Path(sys.executable).with_name("famr-tune")
    args = [str(tune), "--dir", str(tmp_path / "tuning"), "--methods", "ssd", "--trials", "2", "--parallel-trials", "2", "--no-write"]
    args += ["dataset.val_per_class=10", "train.epochs=2", "progress=false", "threads=1", *LAUNCHER]
    proc = subprocess.run(args, cwd=tmp_path, env=_env(tmp_path, slurm_env), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    study = tmp_path / "tuning" / "quickstart" / "class" / "ssd"
    trials = [json.loads(line) for line in (study / "trials.jsonl").read_text().splitlines()]
    assert len(trials) == 2 and len({json.dumps(t["params"], sort_keys=True) for t in trials}) == 2
    # Both trials' four jobs went to SLURM in one launcher call: one job array.
    arrays = {json.loads((study / "runs" / str(n) / "results.json").read_text())["host"]["slurm"]["array_job_id"] for n in range(4)}
    assert len(arrays) == 1
