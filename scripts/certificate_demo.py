#!/usr/bin/env python
"""FAMR's certificate on a convex model: every bound of docs/theory.md measured exactly (seconds, CPU).

    python scripts/certificate_demo.py                      # the table
    python scripts/certificate_demo.py --lams 0.1 1 10      # other lambdas
    python scripts/certificate_demo.py --json cert.json     # also write rows + summary as JSON

Multinomial logistic regression on the digits pixels (float64), forget class 0; theta_0 fitted with
L-BFGS, then FAMR solved per lambda to gradient norm <= 1e-9 (famr_lab.convex_certificate).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from famr_lab.convex_certificate import DEFAULT_LAMS, SLOPE_MIN_LAM, certify, load_problem

BOUNDS = [  # (header, key, format): each measured figure beside the bound docs/theory.md proves for it
    ("lam", "lam", "{:g}"),
    ("|d*|", "param_dist", "{:.4e}"),
    ("g*/2lam", "stationarity_bound", "{:.4e}"),
    ("resid", "stationarity_residual", "{:.1e}"),
    ("G/2lam", "a_priori_bound", "{:.3e}"),
    ("sqrt(Lf0/lam)", "energy_bound", "{:.3e}"),
    ("newton_err", "newton_rel_dist", "{:.2e}"),
    ("newton_bnd", "newton_rel_bound", "{:.1e}"),
    ("grad_step_err", "newton_large_lam_rel_dist", "{:.2e}"),
    ("kl_mean", "drift_kl_mean", "{:.2e}"),
    ("kl_max", "drift_kl_max", "{:.2e}"),
    ("kl_max_bnd", "drift_bound_max", "{:.2e}"),
]
BEHAVIOUR = [
    ("lam", "lam", "{:g}"),
    ("changed", "changed_predictions", "{:.1%}"),
    ("changed_bnd", "changed_predictions_bound", "{:.1%}"),
    ("forget_test%", "forget_test_acc", "{:.1f}"),
    ("retain_test%", "retain_test_acc", "{:.1f}"),
    ("L_f(theta*)", "forget_kl_uniform", "{:.4f}"),
    ("cos(d*,d_retrain)", "cos_retrain", "{:.3f}"),
    ("cos(d*,d_IF)", "cos_influence", "{:.3f}"),
    ("influence_rel_dist", "influence_rel_dist", "{:.3f}"),
    ("lbfgs_iters", "lbfgs_iters", "{:d}"),
]
LEGEND = """\
|d*| = ||theta*-theta_0||_F; g*/2lam = ||grad L_f(theta*)||/(2 lam) (equal at a stationary point); resid = ||grad L_f(theta*) + 2 lam d*||;
G/2lam and sqrt(Lf0/lam): a-priori bounds on |d*|; newton_err = ||d_N - d*||/|d*| for d_N = -(H_f(theta_0) + 2 lam I)^-1 grad L_f(theta_0),
newton_bnd = M |d*| / (4 lam) its proven bound, grad_step_err the same for -grad L_f(theta_0)/(2 lam); kl_* = KL(p_0 || p_unlearned) over
retained test samples, kl_max_bnd = max over them of the per-sample bound min(r, r^2/8), r = sqrt(2) G ||x|| / (2 lam)."""


def format_table(rows: list[dict], columns) -> str:
    cells = [[f.format(r[k]) for _, k, f in columns] for r in rows]
    widths = [max(len(h), *(len(c[j]) for c in cells)) for j, (h, _, _) in enumerate(columns)]
    lines = ["  ".join(h.rjust(w) for (h, _, _), w in zip(columns, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lams", type=float, nargs="+", default=list(DEFAULT_LAMS))
    ap.add_argument("--forget-class", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write {'rows': [...], 'summary': {...}} here")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    cert = certify(args.lams, load_problem(forget_class=args.forget_class))
    s = cert.summary
    print(
        f"digits, multinomial logistic regression, float64: {s['num_params']} params, n_train={s['n_train']}, "
        f"forget class {s['forget_class']} (n_f={s['n_forget']}), {s['n_retain_test']} retained test samples"
    )
    print(
        f"theta_0: ||grad|| = {s['original_grad_norm']:.1e} (L-BFGS {s['original_lbfgs_grad_norm']:.1e}, "
        f"+{s['original_newton_polish_steps']} Newton step), forget-test {s['original_forget_test_acc']:.1f}%, "
        f"retain-test {s['original_retain_test_acc']:.1f}%;  Retrain: forget-test {s['retrain_forget_test_acc']:.1f}%, "
        f"retain-test {s['retrain_retain_test_acc']:.1f}%, ||theta_r - theta_0|| = {s['retrain_param_dist']:.3f}"
    )
    print(
        f"G = sqrt((K-1)/K) mean||x|| = {s['gradient_bound_G']:.4f} (max||x|| version {s['gradient_bound_G_max']:.4f}); "
        f"||grad L_f(theta_0)|| = {s['grad_norm_at_theta0']:.4f}; Hessian Lipschitz M = {s['hessian_lipschitz_M']:.2f}"
    )
    print(
        f"influence-function step d_IF = -H_r^-1 grad J_r(theta_0) vs exact Retrain d_retrain: relative distance "
        f"{s['influence_vs_retrain_rel_dist']:.3f}, cosine {s['cos_influence_retrain']:.3f}"
    )
    print()
    print(format_table(cert.rows, BOUNDS))
    print(LEGEND)
    print()
    print(format_table(cert.rows, BEHAVIOUR))
    print()
    if s["newton_slope"] is not None:
        print(
            f"log-log slopes over lam >= {SLOPE_MIN_LAM:g}: damped-Newton error {s['newton_slope']:.2f}, "
            f"gradient-step error {s['gradient_step_slope']:.2f}"
        )
        lams = [r["lam"] for r in cert.rows]
        for name, key in (("damped-Newton", "newton_local_slopes"), ("gradient-step", "gradient_step_local_slopes")):
            pairs = ", ".join(f"{a:g}-{b:g}: {v:.2f}" for a, b, v in zip(lams, lams[1:], s[key]))
            print(f"  local slopes, {name} error: {pairs}")
    violations = sum(r["drift_bound_violations"] for r in cert.rows)
    print(f"drift bound violations (retained test samples x lambdas): {violations}")
    print(f"({time.perf_counter() - t0:.1f} s)")
    if args.json:
        args.json.write_text(json.dumps({"rows": cert.rows, "summary": s}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
