#!/usr/bin/env python
"""How far each method's values transfer: every method forgets every class in turn, one seed.

    python scripts/class_transfer.py -- experiment=cifar10_cpu dataset.root=<CIFAR-10 copy>
    python scripts/class_transfer.py --methods famr,ssd --classes 0,1,2 -- experiment=quickstart
    python scripts/class_transfer.py --table-only outputs/class_transfer/sweep
    python scripts/class_transfer.py --table-only outputs/class_transfer/*   # one sweep dir per method, merged

A tuned file is chosen on a few forget sets; a user forgets another class. This runs one famr-run
multirun (``forget.classes`` swept over every class, each method at its experiment's values; one
original model, no Retrain: the bar reads only the original and the unlearned model) and prints, per
method and class, the forget-test accuracy and the retained test accuracy, and how many classes meet
the bar: forget-test accuracy at most 10 % with retained test accuracy within 3 points of the
original's. ``--resume`` keeps the jobs that finished.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from famr_cli.reproduce.profiles import ALL_METHODS

FAMR_RUN = str(Path(sys.executable).with_name("famr-run"))
FORGOTTEN_AT_MOST = 10.0  # forget-test accuracy (%) that counts as forgotten
KEPT_WITHIN = 3.0  # retained test accuracy may fall this many points below the original's


def meets_bar(row: dict[str, float]) -> bool:
    return row["forget_test_acc"] <= FORGOTTEN_AT_MOST and row["original_retain_test_acc"] - row["retain_test_acc"] <= KEPT_WITHIN


def collect(sweep: Path) -> dict[str, dict[int, dict[str, float]]]:
    """method -> forgotten class -> its figures, from every ok results.json of the sweep."""
    table: dict[str, dict[int, dict[str, float]]] = {}
    for path in sorted(sweep.glob("*/results.json")):
        results = json.loads(path.read_text())
        if results.get("status") != "ok":
            continue
        classes = (results.get("forget") or {}).get("classes") or []
        if len(classes) != 1:
            continue
        original, unlearned = results["metrics"]["original"], results["metrics"]["unlearned"]
        table.setdefault(results["method"], {})[int(classes[0])] = {
            "forget_test_acc": unlearned["forget_test_acc"],
            "retain_test_acc": unlearned["retain_test_acc"],
            "original_forget_test_acc": original["forget_test_acc"],
            "original_retain_test_acc": original["retain_test_acc"],
        }
    return table


def collect_all(sweeps: list[Path]) -> dict[str, dict[int, dict[str, float]]]:
    """``collect`` over several sweep dirs, merged (a method's classes may come from different sweeps)."""
    table: dict[str, dict[int, dict[str, float]]] = {}
    for sweep in sweeps:
        for method, rows in collect(sweep).items():
            table.setdefault(method, {}).update(rows)
    return table


def markdown(table: dict[str, dict[int, dict[str, float]]], classes: list[int]) -> str:
    head = ["method", *(f"class {c}" for c in classes), f"classes meeting the bar (of {len(classes)})"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    originals: dict[int, dict[str, float]] = {}
    for rows in table.values():
        originals.update(rows)
    if originals:
        cells = [
            _cell(originals[c]["original_forget_test_acc"], originals[c]["original_retain_test_acc"]) if c in originals else "–"
            for c in classes
        ]
        lines.append("| original | " + " | ".join(cells) + " | – |")
    for method, rows in table.items():
        cells = [_cell(rows[c]["forget_test_acc"], rows[c]["retain_test_acc"]) if c in rows else "–" for c in classes]
        met = sum(1 for c in classes if c in rows and meets_bar(rows[c]))
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {met} of {sum(1 for c in classes if c in rows)} run |")
    return "\n".join(lines)


def _cell(forget: Any, retained: Any) -> str:
    return f"{forget:.1f} / {retained:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--methods",
        default=",".join(m for m in ALL_METHODS if m != "retrain"),
        help="comma-separated methods (default: every method of the comparison)",
    )
    parser.add_argument("--classes", default="0,1,2,3,4,5,6,7,8,9", help="the classes forgotten, one at a time")
    parser.add_argument("--out", type=Path, default=Path("outputs/class_transfer/sweep"), help="the sweep dir")
    parser.add_argument("--resume", action="store_true", help="keep the jobs of --out that finished ok")
    parser.add_argument(
        "--table-only",
        type=Path,
        nargs="+",
        metavar="SWEEP",
        help="print the table of finished sweeps (one per method, say, run side by side with --out) and exit",
    )
    argv = sys.argv[1:] if argv is None else argv
    ours, passed = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    args = parser.parse_args(ours)
    try:
        classes = [int(c) for c in args.classes.split(",") if c.strip()]
    except ValueError:
        print(f"class_transfer: --classes takes class ids such as 0,1,2 (got {args.classes!r}).", file=sys.stderr)
        return 2
    if args.table_only:
        print(markdown(collect_all(args.table_only), classes))
        return 0
    sweep = [
        FAMR_RUN,
        "-m",
        *passed,
        f"method={args.methods}",
        "forget=class",
        "forget.classes=choice(" + ",".join(f"[{c}]" for c in classes) + ")",
        "evaluate.reference=none",
        # The table reads two accuracies: the attack, the checks and the certificate would be most of a fast method's job.
        "evaluate.mia=false",
        "evaluate.robustness.enabled=false",
        "evaluate.certificate=false",
        "progress=false",
        *(["skip_finished=true"] if args.resume else []),
        f"hydra.sweep.dir={args.out}",
    ]
    code = subprocess.run(sweep).returncode
    print(markdown(collect(args.out), classes))
    return code


if __name__ == "__main__":
    sys.exit(main())
