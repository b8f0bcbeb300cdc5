#!/usr/bin/env python
"""Where each population's forget-set scores sit: the median over D_f of the per-example mean and spread.

    python scripts/privacy_score_medians.py outputs/privacy/quickstart/class --protocol full

Reads the members' ``forget_scores.safetensors`` (true-class log-odds, written under
``evaluate.forget_scores=true``) of a famr-privacy directory and prints, per population, the median over
the forget examples of the mean log-odds across the population's models and of their standard deviation.
Retrain's row reads the Retrain population's own scores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file


def population_scores(folder: Path, key: str) -> np.ndarray:
    """Models x forget examples: the ``key`` scores of every member of ``folder``."""
    files = sorted(folder.glob("*/forget_scores.safetensors"))
    return np.array([load_file(f)[key] for f in files]) if files else np.empty((0, 0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="<famr-privacy --dir>/<experiment>/<forget>")
    parser.add_argument("--protocol", default="full", choices=("competition", "full"))
    args = parser.parse_args(argv)
    populations = args.directory / "populations"
    if not populations.is_dir():
        print(f"privacy_score_medians: no populations under {args.directory}; pass <dir>/<experiment>/<forget>.", file=sys.stderr)
        return 2
    if not (populations / args.protocol).is_dir():
        missing = f"no {args.protocol} populations under {populations}"
        print(f"privacy_score_medians: {missing}; pass --protocol with one that ran.", file=sys.stderr)
        return 2
    rows = [("Retrain", population_scores(populations / "retrain", "retrain"))]
    rows += [(m.name, population_scores(m, "unlearned")) for m in sorted((populations / args.protocol).iterdir()) if m.is_dir()]
    print("| population | models | median mean log-odds | median spread |\n|---|---|---|---|")
    for name, scores in rows:
        if scores.size:
            print(f"| {name} | {len(scores)} | {np.median(scores.mean(0)):.2f} | {np.median(scores.std(0)):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
