#!/usr/bin/env bash
# The sweep behind the quickstart's FAMR defaults (docs/configuration.md, "FAMR defaults"): every digits class
# forgotten in turn, for each (lr, lam) pair; one original model trained, reused by all 40 jobs.
# About 4 minutes on 2 CPU cores after the original model is cached (234 s on 2 Intel Xeon cores, 2026-12-03).
set -euo pipefail
BIN="${BIN:-.venv/bin}"
SWEEP_DIR="${1:-outputs/multirun/tune_famr_digits}"
mkdir -p "$(dirname "$SWEEP_DIR")"  # the log beside the sweep dir is written before famr-run makes its folders
# The table reads forget-test and retained accuracy alone: no Retrain per forgotten class (10 of them, ~60 s
# each) and no robustness checks. With them the same table took 709 s instead of 234 s (same machine and day).
"$BIN/famr-run" -m progress=false evaluate.reference=none evaluate.robustness.enabled=false \
  method.lr=3e-4,1e-3 method.lam=0.1,0.3 \
  'forget.classes=[0],[1],[2],[3],[4],[5],[6],[7],[8],[9]' \
  hydra.sweep.dir="$SWEEP_DIR" > "$SWEEP_DIR.log" 2>&1 || { tail -20 "$SWEEP_DIR.log"; exit 1; }
"$BIN/famr-summarize" "$SWEEP_DIR" --by forget.classes
