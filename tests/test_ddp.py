"""torchrun with 2 CPU processes (gloo): the original and Retrain models are trained with DDP, rank 0 reports."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import FAMR_RUN, cli_env, read_results, run_cli

TORCHRUN = str(Path(FAMR_RUN).with_name("torchrun"))


@pytest.mark.skipif(not Path(TORCHRUN).exists(), reason="torchrun is not installed")
@pytest.mark.slow
def test_two_process_ddp_trains_once_and_rank0_alone_reports(tmp_path):
    args = ["train.epochs=6", "method.epochs=2", "evaluate.reference=retrain", "threads=1", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run(
        [TORCHRUN, "--standalone", "--nproc-per-node=2", "-m", "famr_cli", *args],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "DDP: process 0 of 2 (gloo backend)" in output and "DDP: process 1 of 2 (gloo backend)" in output
    assert "Traceback" not in output
    # Both processes ran every epoch of both trainings; only rank 0 wrote the cache and the results.
    assert output.count("original model: epoch 6/6") == 2 and output.count("retrain model: epoch 6/6") == 2
    results = read_results(tmp_path / "run")
    assert results["status"] == "ok"
    assert results["metrics"]["original"]["test_acc"] > 90
    assert results["metrics"]["retrain"]["forget_test_acc"] == 0.0
    for kind in ("original", "retrain"):
        (meta,) = (tmp_path / "cache" / kind).glob("*/meta.json")
        assert json.loads(meta.read_text())["metrics"]["ddp_processes"] == 2
    assert len(list(tmp_path.rglob("results.json"))) == 1

    # A single-process run finds the DDP-trained models in the cache: DDP changes how, not what, is cached.
    single = run_cli([*args[:-1], f"hydra.run.dir={tmp_path / 'single'}"], cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-2000:]
    assert read_results(tmp_path / "single")["cache"]["original"]["hit"] is True
    assert read_results(tmp_path / "single")["metrics"]["original"] == results["metrics"]["original"]
