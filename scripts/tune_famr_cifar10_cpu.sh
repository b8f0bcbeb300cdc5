#!/usr/bin/env bash
# The sweep behind experiment=cifar10_cpu's FAMR defaults (docs/results.md, "Results: CIFAR-10 on 2 CPU
# cores"). Needs the CIFAR-10 data: CIFAR10_ROOT=<folder or .tar.gz in the CIFAR layout>.
# The original model is trained once (about 12 minutes) and reused by every job.
set -euo pipefail
BIN="${BIN:-.venv/bin}"
ROOT="${CIFAR10_ROOT:-${FAMR_CIFAR10_ROOT:-../shared/data/cifar10-jpeg.tar.gz}}"
SWEEP_DIR="${1:-outputs/multirun/tune_famr_cifar10_cpu}"
shift || true
mkdir -p "$(dirname "$SWEEP_DIR")"
"$BIN/famr-run" -m experiment=cifar10_cpu progress=false dataset.root="$ROOT" \
  method.lr=3e-5,1e-4,3e-4 method.lam=0.1,10 method.epochs=1,2 "$@" \
  hydra.sweep.dir="$SWEEP_DIR" > "$SWEEP_DIR.log" 2>&1 || { tail -20 "$SWEEP_DIR.log"; exit 1; }
"$BIN/famr-summarize" "$SWEEP_DIR"
