#!/usr/bin/env bash
# The reliability drill on digits: kills, corrupt caches, concurrent jobs, wandb down, divergence,
# and docs/errors.md's bad inputs. Prints faults injected / recovered / results lost / bad inputs rejected.
# Usage: scripts/fault_drill.sh [--keep] [--skip-bad-inputs]     (PYTHON=... to pick the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" scripts/fault_drill.py "$@"
