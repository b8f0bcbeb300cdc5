#!/usr/bin/env python
"""Each baseline's official recipe (its default) beside famr's earlier recipe (its named options), side by side.

    python scripts/recipe_comparison.py -- experiment=cifar10_cpu dataset.root=<CIFAR-10 copy>
    python scripts/recipe_comparison.py --methods ssd,scrub --out outputs/recipes -- experiment=quickstart

For every method whose default changed to its authors' code, one famr-run with the method's own YAML (the
official recipe) and one with the options that restore famr's earlier recipe, both against the cached
Retrain on the same forget set and seed; then a Markdown table (UA, RA, TA, forget-test accuracy,
MIA-Efficacy, Avg. Gap, unlearning seconds) of the two; a run that diverges says so in its row. Runs that
finished (ok or diverged) are not run again, so a stopped comparison continues where it stopped.
Everything after ``--`` goes to every famr-run. Both runs use the experiment's values for the keys the
recipes leave alone: a tuned file, where the experiment has one, applies to both.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

FAMR_RUN = str(Path(sys.executable).with_name("famr-run"))

# famr's earlier recipe of each baseline, as overrides of its current options (CHANGELOG, docs/configuration.md).
EARLIER = {
    "random_label": ["method.relabel=fixed_wrong", "method.passes=mixed"],
    "salun": ["method.relabel=fixed_wrong", "method.passes=mixed"],
    "grad_ascent": ["method.augment=false", "method.bn=eval", "method.weight_decay=0"],
    "l1_sparse": ["method.alpha_schedule=per_step"],
    "ssd": ["method.fisher_batch_size=256", "method.fisher_order=dataset"],
    "scrub": ["method.epochs=5", "method.forget_batch_size=256", "method.lr_decay_epochs=[]"],
}
COLUMNS = [
    ("UA", lambda r: r["metrics"]["unlearned"].get("UA")),
    ("RA", lambda r: r["metrics"]["unlearned"].get("RA")),
    ("TA", lambda r: r["metrics"]["unlearned"].get("TA")),
    ("forget-test acc", lambda r: r["metrics"]["unlearned"].get("forget_test_acc")),
    ("MIA-Efficacy", lambda r: r["metrics"]["unlearned"].get("mia_efficacy")),
    ("Avg. Gap", lambda r: (r.get("gaps") or {}).get("avg_gap")),
    ("RTE s", lambda r: r["timing"]["unlearn_s"]),
]


def run_one(run_dir: Path, args: list[str]) -> dict | None:
    results = run_dir / "results.json"
    if results.is_file() and json.loads(results.read_text()).get("status") in ("ok", "diverged"):
        return json.loads(results.read_text())  # a finished run, diverged ones included (deterministic on one machine)
    log = run_dir.with_suffix(".log")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        subprocess.run([FAMR_RUN, *args, f"hydra.run.dir={run_dir}"], stdout=out, stderr=subprocess.STDOUT)
    return json.loads(results.read_text()) if results.is_file() else None


def cell(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(EARLIER), help=f"comma-separated subset of {', '.join(EARLIER)}")
    parser.add_argument("--out", type=Path, default=Path("outputs/recipe_comparison"), help="where the runs go")
    argv = sys.argv[1:] if argv is None else argv
    ours, passed = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    args = parser.parse_args(ours)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in EARLIER]
    if unknown:
        print(f"recipe_comparison: no earlier recipe is recorded for {unknown}; choose from {', '.join(EARLIER)}.", file=sys.stderr)
        return 2
    common = ["evaluate.reference=retrain", "evaluate.robustness.enabled=false", "progress=false", *passed]
    lines = ["| method | recipe | " + " | ".join(name for name, _ in COLUMNS) + " |", "|---|---|" + "---|" * len(COLUMNS)]
    worst = 0
    for method in methods:
        for recipe, extra in (("official (default)", []), ("famr's earlier", EARLIER[method])):
            run_dir = args.out / method / ("official" if not extra else "earlier")
            results = run_one(run_dir, [f"method={method}", *common, *extra])
            shown = recipe if not extra else f"{recipe} (`{' '.join(extra)}`)"
            if results is None or results.get("status") != "ok":
                # A diverged run is a result (the recipe cannot run at these values); anything else is a failure.
                status = "no results.json" if results is None else f"{results.get('status')}: {results.get('error', '')}"
                worst = worst if results is not None and results.get("status") == "diverged" else 1
                lines.append(f"| {method} | {shown} | {status} (log: {run_dir.with_suffix('.log')}) |")
                continue
            lines.append(f"| {method} | {shown} | " + " | ".join(cell(get(results)) for _, get in COLUMNS) + " |")
        print("\n".join(lines[-2:]), flush=True)
    print("\n".join(lines))
    return worst


if __name__ == "__main__":
    sys.exit(main())
