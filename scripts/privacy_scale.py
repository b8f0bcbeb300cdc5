#!/usr/bin/env python3
"""The best privacy score a method can get at N models: two populations drawn from one distribution.

Prints, per N, the competition's F and median per-example epsilon and U-LiRA's AUC and TPR at 1 % FPR when the
"unlearned" and the "retrained" scores of every forget example come from the same Gaussian (a perfect unlearner).
F stays below 1 because epsilon is a maximum over many thresholds: the gap to 1 is the metric's own noise at N.

    python scripts/privacy_scale.py --examples 500 --sizes 8,16,32,64,128
"""

from __future__ import annotations

import argparse

import numpy as np

from famr_cli.privacy.competition import example_epsilons, forget_score_from_epsilons
from famr_cli.privacy.ulira import ulira


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500, help="forget examples (default 500)")
    parser.add_argument("--sizes", default="8,16,32,64,128", help="comma-separated N values")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print("| N | F | median ε | p90 ε | U-LiRA AUC | TPR@1% FPR |")
    print("|---|---|---|---|---|---|")
    for n in (int(s) for s in args.sizes.split(",")):
        # Per example its own mean and spread, as real models' log-odds have; both populations share them.
        mean = rng.normal(3.0, 2.0, size=args.examples)
        spread = rng.uniform(0.3, 2.0, size=args.examples)
        a = mean + spread * rng.standard_normal((n, args.examples))
        b = mean + spread * rng.standard_normal((n, args.examples))
        eps = example_epsilons(a, b)
        attack = ulira(a, b, seed=args.seed)
        print(
            f"| {n} | {forget_score_from_epsilons(eps, n):.3f} | {np.median(eps):.2f} | {np.percentile(eps, 90):.2f} "
            f"| {attack.auc:.3f} | {attack.tpr_at_1pct_fpr:.3f} |"
        )


if __name__ == "__main__":
    main()
