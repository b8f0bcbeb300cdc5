#!/usr/bin/env bash
# The sweep behind the quickstart's FAMR defaults (docs/configuration.md, "FAMR defaults"): every digits class
# forgotten in turn, for each (lr, lam) pair; one original model trained, reused by all 40 jobs.
# About 3 minutes on 2 CPU cores after the original model is cached.
set -euo pipefail
BIN="${BIN:-.venv/bin}"
SWEEP_DIR="${1:-outputs/multirun/tune_famr_digits}"
mkdir -p "$(dirname "$SWEEP_DIR")"  # the log beside the sweep dir is written before famr-run makes its folders
"$BIN/famr-run" -m progress=false \
  method.lr=3e-4,1e-3 method.lam=0.1,0.3 \
  'forget.classes=[0],[1],[2],[3],[4],[5],[6],[7],[8],[9]' \
  hydra.sweep.dir="$SWEEP_DIR" > "$SWEEP_DIR.log" 2>&1 || { tail -20 "$SWEEP_DIR.log"; exit 1; }
"$BIN/famr-summarize" "$SWEEP_DIR" --by forget.classes
