"""The trials of finished searches as Markdown: one summary row per method, then every trial.

    python -m famr_cli.tune.report outputs/tuning/cifar10_cpu/class          # every method under it
    python -m famr_cli.tune.report outputs/tuning/cifar10_cpu/class --trials  # and every trial

Reads only the JSON-lines trials files famr-tune writes (``<dir>/<method>/trials.jsonl``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from famr_cli.tune.study import OK, best_trial, distinct_settings, read_trials


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 0.01 or value == 0 else f"{value:.2g}"
    return str(value)


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k.removeprefix('method.')}={_f(v, 4) if isinstance(v, float) else v}" for k, v in sorted(params.items()))


def summary_table(root: Path) -> str:
    head = ["method", "trials", "accepted", "trial seconds", "best Avg. Gap (val)", "best values", "UA", "RA", "TA", "forget acc", "MIA"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for study in sorted(p for p in root.iterdir() if (p / "trials.jsonl").is_file()):
        records = read_trials(study / "trials.jsonl")
        tried = distinct_settings(records)
        best = best_trial(records)
        scores = (best or {}).get("unlearned") or {}
        cells = [
            study.name,
            str(len(tried)),
            str(sum(r["state"] == OK for r in tried)),
            f"{sum(r.get('wall_s') or 0 for r in records):.0f}",
            _f(best["objective"]) if best else "–",
            _params(best["params"]) if best else "none accepted",
            *(_f(scores.get(k)) for k in ("UA", "RA", "TA", "forget_test_acc", "mia_efficacy")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def trials_table(study: Path) -> str:
    head = ["trial", "values", "state", "Avg. Gap", "UA", "RA", "TA", "forget acc", "MIA", "s"]
    lines = [f"**{study.name}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in read_trials(study / "trials.jsonl"):
        scores = r.get("unlearned") or {}
        state = r["state"] + (f" ({r['reason']})" if r.get("reason") else "")
        cells = [str(r["number"]), _params(r["params"]), state, _f(r.get("objective"))]
        cells += [_f(scores.get(k)) for k in ("UA", "RA", "TA", "forget_test_acc", "mia_efficacy")]
        lines.append("| " + " | ".join([*cells, f"{r.get('wall_s') or 0:.0f}"]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="famr-tune's <dir>/<experiment>/<forget>")
    parser.add_argument("--trials", action="store_true", help="also every trial of every method")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        print(f"famr-tune report: {args.root} is not a directory; pass famr-tune's <dir>/<experiment>/<forget>.", file=sys.stderr)
        return 2
    print(summary_table(args.root))
    if args.trials:
        for study in sorted(p for p in args.root.iterdir() if (p / "trials.jsonl").is_file()):
            print(trials_table(study))
    return 0


if __name__ == "__main__":
    sys.exit(main())
