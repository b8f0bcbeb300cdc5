"""The trials of finished searches as Markdown: one summary row per method, then every trial.

    python -m famr_cli.tune.report outputs/tuning/cifar10_cpu/class          # every method under it
    python -m famr_cli.tune.report outputs/tuning/cifar10_cpu/class --trials  # and every trial

Reads only the JSON-lines trials files famr-tune writes (``<dir>/<method>/trials.jsonl``). A trial scored on
several forget sets shows their mean figures and each set's Avg. Gap. Methods come grouped by the training
data they read (the ``reads`` column; :mod:`famr_cli.method_reads`), as in every famr table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from famr_cli.method_reads import field_order, grouped, reads_of_option
from famr_cli.tune.study import OK, best_trial, distinct_settings, read_trials


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 0.01 or value == 0 else f"{value:.2g}"
    return str(value)


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k.removeprefix('method.')}={_f(v, 4) if isinstance(v, float) else v}" for k, v in sorted(params.items()))


SCORES = ("UA", "RA", "TA", "forget_test_acc", "mia_efficacy")


def mean_scores(record: dict[str, Any]) -> dict[str, Any]:
    """A trial's unlearned figures: the mean over its forget sets when it ran several, else its own."""
    sets = record.get("forget_sets") or []
    if not sets:
        return record.get("unlearned") or {}
    out = {}
    for key in SCORES:
        values = [(s.get("unlearned") or {}).get(key) for s in sets]
        out[key] = None if any(v is None for v in values) else sum(values) / len(values)
    return out


def per_set_gaps(record: dict[str, Any] | None) -> str:
    """Each forget set's objective, e.g. ``3.10 / 4.80``: how evenly the values hold across the task."""
    sets = (record or {}).get("forget_sets") or []
    return " / ".join(_f(s.get("objective")) for s in sets) or "–"


def studies(root: Path) -> list[Path]:
    """The method folders under ``root`` holding a trials file, grouped by the data the method reads, each group in the field's order."""
    found = {p.name: p for p in root.iterdir() if (p / "trials.jsonl").is_file()}
    return [found[name] for name in grouped(field_order(found), reads_of_option)]


def summary_table(root: Path) -> str:
    head = [
        "method",
        "reads",
        "trials",
        "accepted",
        "trial seconds",
        "best Avg. Gap (val)",
        "best values",
        "UA",
        "RA",
        "TA",
        "forget acc",
        "MIA",
    ]
    head.append("Avg. Gap per forget set")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for study in studies(root):
        records = read_trials(study / "trials.jsonl")
        tried = distinct_settings(records)
        best = best_trial(records)
        scores = mean_scores(best or {})
        cells = [
            study.name,
            reads_of_option(study.name).label,
            str(len(tried)),
            str(sum(r["state"] == OK for r in tried)),
            f"{sum(r.get('wall_s') or 0 for r in records):.0f}",
            _f(best["objective"]) if best else "–",
            _params(best["params"]) if best else "none accepted",
            *(_f(scores.get(k)) for k in SCORES),
            per_set_gaps(best),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def trials_table(study: Path) -> str:
    head = ["trial", "values", "state", "Avg. Gap", "per forget set", "UA", "RA", "TA", "forget acc", "MIA", "s"]
    lines = [f"**{study.name}** (reads {reads_of_option(study.name).label})", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in read_trials(study / "trials.jsonl"):
        scores = mean_scores(r)
        state = r["state"] + (f" ({r['reason']})" if r.get("reason") else "")
        cells = [str(r["number"]), _params(r["params"]), state, _f(r.get("objective")), per_set_gaps(r)]
        cells += [_f(scores.get(k)) for k in SCORES]
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
        for study in studies(args.root):
            print(trials_table(study))
    return 0


if __name__ == "__main__":
    sys.exit(main())
