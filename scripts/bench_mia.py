"""When do MIA-Efficacy's five SVC attacks pay for worker processes?

    python scripts/bench_mia.py            # shadow sizes 324 (digits), 1000, 2000, 3000, 5000 (the cap)

Prints, per shadow-set size (rows a side), the seconds of the five fits in this process and with a
fresh two-worker loky pool (the pool's start-up included, as a famr-run job pays it once) and again
on the now warm pool (as the job's later evaluations run), and the ratios to in-process.
famr_cli.evaluate.unlearning_metrics.PARALLEL_SHADOW_MIN is set from these figures.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from joblib import Parallel, delayed
from joblib.externals.loky import get_reusable_executor

from famr_cli.evaluate.unlearning_metrics import _attack_share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[324, 1000, 2000, 3000, 5000])
    parser.add_argument("--features", type=int, default=10, help="columns of a feature (10: the prob attack on 10 classes)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    columns = ["shadow rows a side", "in process (s)", "2 workers, cold pool (s)", "2 workers, warm pool (s)"]
    print("| " + " | ".join([*columns, "cold / in process", "warm / in process"]) + " |")
    print("|---|---|---|---|---|---|")
    for n in args.sizes:
        x = rng.random((2 * n, args.features))
        y = np.concatenate([np.ones(n), np.zeros(n)])
        forget = rng.random((500, args.features))
        start = time.perf_counter()
        for _ in range(5):
            _attack_share(x, y, forget)
        alone = time.perf_counter() - start
        get_reusable_executor().shutdown(wait=True)  # each size pays the start-up, as each job does
        start = time.perf_counter()
        Parallel(n_jobs=2, backend="loky")(delayed(_attack_share)(x, y, forget) for _ in range(5))
        cold = time.perf_counter() - start
        start = time.perf_counter()
        Parallel(n_jobs=2, backend="loky")(delayed(_attack_share)(x, y, forget) for _ in range(5))
        warm = time.perf_counter() - start
        print(f"| {n} | {alone:.2f} | {cold:.2f} | {warm:.2f} | {cold / alone:.2f} | {warm / alone:.2f} |")


if __name__ == "__main__":
    main()
