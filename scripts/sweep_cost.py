#!/usr/bin/env python
"""What a λ sweep costs compared with a single run: proof that the original model is trained once.

    python scripts/sweep_cost.py                                  # digits, λ = 0.01 … 1 (5 values)
    python scripts/sweep_cost.py --lams 0.1,1 -- experiment=cifar10_cpu dataset.root=...

Both measurements start from an empty cache of their own (temp dirs), so each trains the original
model (and the Retrain reference) itself. The bound we hold it to:

    sweep wall <= 1.2 * (single-run wall + sum over jobs of (unlearning + evaluation time))

and the ratio printed is sweep wall / (single-run wall + that sum); ≤ 1.2 passes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FAMR_RUN = str(Path(sys.executable).with_name("famr-run"))


def run(args: list[str], cache: Path, out: Path) -> float:
    env = {**os.environ, "FAMR_CACHE_DIR": str(cache), "FAMR_OUTPUT_DIR": str(out)}
    start = time.perf_counter()
    proc = subprocess.run([FAMR_RUN, *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"famr-run {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall


def job_seconds(results_file: Path) -> tuple[float, float]:
    timing = json.loads(results_file.read_text())["timing"]
    return float(timing["unlearn_s"]), float(timing["eval_s"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lams", default="0.01,0.03,0.1,0.3,1", help="comma-separated λ values of the sweep")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("overrides", nargs="*", help="famr-run overrides shared by both measurements (after --)")
    args = parser.parse_args()
    shared = ["progress=false", *args.overrides]
    with tempfile.TemporaryDirectory(prefix="famr-sweep-cost-") as tmp:
        tmp = Path(tmp)
        single_wall = run([*shared, f"hydra.run.dir={tmp / 'single'}"], tmp / "cache-single", tmp)
        sweep_wall = run(["-m", *shared, f"method.lam={args.lams}", f"hydra.sweep.dir={tmp / 'sweep'}"], tmp / "cache-sweep", tmp)
        jobs = sorted((tmp / "sweep").glob("*/results.json"), key=lambda p: int(p.parent.name))
        per_job = [job_seconds(p) for p in jobs]
    n = len(per_job)
    unlearn_eval = sum(u + e for u, e in per_job)
    baseline = single_wall + unlearn_eval
    figures = {
        "jobs": n,
        "single_run_wall_s": single_wall,
        "sweep_wall_s": sweep_wall,
        "sum_unlearn_s": sum(u for u, _ in per_job),
        "sum_eval_s": sum(e for _, e in per_job),
        "bound_s": 1.2 * baseline,
        "ratio": sweep_wall / baseline,
        "naive_ratio": sweep_wall / (n * single_wall),
    }
    sum_u, sum_e = figures["sum_unlearn_s"], figures["sum_eval_s"]
    lines = [
        ("single run (trains original + Retrain, unlearns, evaluates)", f"{single_wall:8.1f} s"),
        (f"{n}-job λ sweep ({args.lams})", f"{sweep_wall:8.1f} s"),
        ("sum over jobs of unlearning + evaluation", f"{unlearn_eval:8.1f} s ({sum_u:.1f} + {sum_e:.1f})"),
        ("bound 1.2 x (single + sum)", f"{figures['bound_s']:8.1f} s"),
        ("ratio sweep / (single + sum), <= 1.2 passes", f"{figures['ratio']:8.3f}   {'PASS' if figures['ratio'] <= 1.2 else 'FAIL'}"),
        (f"for scale: sweep / ({n} x single run)", f"{figures['naive_ratio']:8.3f}"),
    ]
    for label, value in lines:
        print(f"{label:<62}{value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if figures["ratio"] <= 1.2 else 1


if __name__ == "__main__":
    sys.exit(main())
