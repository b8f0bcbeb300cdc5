"""Every robustness check of one or more sweeps as one Markdown table: the original and Retrain (from the
first job), then one row per job, each check's figure and, in brackets, its excess over Retrain.

    famr-run -m experiment=cifar10_cpu method=famr,finetune,random_label,salun,scrub hydra.sweep.dir=outputs/rob/methods
    famr-run -m experiment=cifar10_cpu method=famr method.head_only=true,false hydra.sweep.dir=outputs/rob/head
    famr-robustness outputs/rob/methods outputs/rob/head

Definitions: docs/robustness.md. Rows are labelled by the overrides their jobs varied.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from famr_cli.sweep.jobs import load_jobs, varied_keys


def columns(k: int) -> list[tuple[str, str, str, str | None]]:
    """(header, check, key, excess key in vs_retrain)."""
    return [
        ("forgotten acc", "relearn", "forget_acc_before", None),
        (f"relearn {k} full", "relearn", f"full_k{k}_forget_acc", f"residual_full_k{k}"),
        (f"relearn {k} head", "relearn", f"head_k{k}_forget_acc", f"residual_head_k{k}"),
        (f"prototype {k}", "relearn", f"prototype_k{k}_forget_acc", f"residual_prototype_k{k}"),
        (f"retained after relearn {k}", "relearn", f"full_k{k}_retain_acc", None),
        ("probe forgotten", "probe", "probe_forget_acc", "probe_forget_acc_gap"),
        ("probe retained", "probe", "probe_retain_acc", "probe_retain_acc_gap"),
        ("held-out AUC", "heldout", "auc", None),
        ("KS conf", "heldout", "ks_confidence", "ks_confidence_gap"),
        ("KS loss", "heldout", "ks_loss", "ks_loss_gap"),
        ("ECE", "calibration", "ece", "ece_gap"),
        ("entropy D_f", "calibration", "entropy_forget", "entropy_forget_gap"),
        ("entropy held-out", "calibration", "entropy_heldout", "entropy_heldout_gap"),
    ]


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.2f}"


def row(label: str, figures: dict[str, Any], vs: dict[str, Any], cols, extra: dict[str, Any]) -> str:
    cells = []
    for _, check, key, excess in cols:
        value = (figures.get(check) or {}).get(key)
        more = (vs.get(check) or {}).get(excess) if excess and vs else None
        cells.append(_fmt(value) + (f" ({more:+.2f})" if more is not None else ""))
    cells += [_fmt(extra.get(name)) for name in ("cka_vs_retrain", "cka_vs_original", "privleak")]
    return f"| {label} | " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", type=Path)
    parser.add_argument("--k", type=int, default=5, help="the relearning k to show (one of evaluate.robustness.relearn.shots)")
    args = parser.parse_args(argv)
    jobs = [job for sweep in args.sweeps for job in load_jobs(sweep) if job.ok and (job.results or {}).get("robustness")]
    if not jobs:
        print("No finished job with robustness figures under " + ", ".join(map(str, args.sweeps)), file=sys.stderr)
        return 1
    cols = columns(args.k)
    head = ["model", *(c[0] for c in cols), "CKA to Retrain", "CKA to original", "privleak"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    first = jobs[0].results["robustness"]
    for name in ("original", "retrain"):
        if name in first:
            lines.append(row(name.capitalize(), first[name], {}, cols, {}))
    keys = varied_keys(jobs)
    for job in jobs:
        rob = job.results["robustness"]
        vs = rob.get("vs_retrain") or {}
        label = ", ".join(f"{k}={v}" for k in keys if (v := job.overrides.get(k)) is not None) or job.results.get("method", job.dir.name)
        extra = {**(vs.get("probe") or {}), **(vs.get("heldout") or {})}
        lines.append(row(label, rob["unlearned"], vs, cols, extra))
    print(f"Accuracies in %, k = {args.k} images per forgotten class; (±x) = excess over Retrain under the identical check.")
    print(f"Forgotten images: {first['sets'].get('forget')}; attack images: {first['sets'].get('pool')}.\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
