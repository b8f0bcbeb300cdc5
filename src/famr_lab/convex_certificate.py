"""FAMR's certificate checked exactly on a convex model (docs/theory.md).

Multinomial logistic regression on fixed features (scikit-learn's 8x8 digits, pixels / 16 plus a
bias column, K = 10, theta = W of shape K x d). theta_0 is the original model (mean cross-entropy on
the training split + a small L2, our choice), D_f is every training row of one class. For each lambda
FAMR's objective

    L_f(W) + lam * ||W - W_0||_F^2,   L_f(W) = mean_{x in D_f} KL(u || softmax(W x))

is solved to high precision with L-BFGS, and the quantities of docs/theory.md are measured beside
their bounds: the stationarity identity ||W* - W_0|| = ||grad L_f(W*)|| / (2 lam), the a-priori bound
G / (2 lam), the damped-Newton prediction -(H_f(W_0) + 2 lam I)^-1 grad L_f(W_0) and its error, and
the output drift KL(p_original || p_unlearned) on the retained test samples beside its bound.

Only the kl_uniform loss is treated: it is convex in the logits, so L_f is convex in W and the FAMR
objective is (2 lam)-strongly convex. Everything is float64 on the CPU and takes seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

DTYPE = torch.float64
DEFAULT_LAMS: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
ORIGINAL_L2 = 1e-3  # ours: the original model's (and Retrain's) weight decay, mu * ||W||_F^2
SLOPE_MIN_LAM = 1.0  # the log-log slope of the Newton error is fitted over lam >= this


@dataclass(frozen=True)
class ConvexProblem:
    """Features with a bias column (float64) and labels; the forget set is every training row of `forget_class`."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    forget_class: int

    @property
    def x_forget(self) -> torch.Tensor:
        return self.x_train[self.y_train == self.forget_class]

    @property
    def x_retain(self) -> torch.Tensor:
        return self.x_train[self.y_train != self.forget_class]

    @property
    def y_retain(self) -> torch.Tensor:
        return self.y_train[self.y_train != self.forget_class]

    @property
    def num_params(self) -> int:
        return self.num_classes * self.x_train.shape[1]


def load_problem(forget_class: int = 0, seed: int = 0, test_size: float = 0.2) -> ConvexProblem:
    """Digits pixels / 16 plus a bias column; stratified train/test split (80/20, seed 0 by default)."""
    digits = load_digits()
    x = np.hstack([digits.data / 16.0, np.ones((len(digits.data), 1))])
    x_tr, x_te, y_tr, y_te = train_test_split(x, digits.target, test_size=test_size, stratify=digits.target, random_state=seed)

    def t(a, dtype=DTYPE):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)

    return ConvexProblem(t(x_tr), t(y_tr, torch.long), t(x_te), t(y_te, torch.long), int(digits.target.max()) + 1, forget_class)


# --------------------------------------------------------------------------------------------- losses


def kl_uniform(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L_f: mean over rows of KL(u || softmax(W x)) = logsumexp(z) - mean_k z_k - log K."""
    z = x @ w.T
    return (torch.logsumexp(z, 1) - z.mean(1)).mean() - math.log(w.shape[0])


def cross_entropy(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the true labels."""
    return torch.nn.functional.cross_entropy(x @ w.T, y)


def famr_objective(x_forget: torch.Tensor, w0: torch.Tensor, lam: float) -> Callable[[torch.Tensor], torch.Tensor]:
    w0 = w0.detach()
    return lambda w: kl_uniform(w, x_forget) + lam * (w - w0).pow(2).sum()


def grad_of(fn: Callable[[torch.Tensor], torch.Tensor], w: torch.Tensor) -> torch.Tensor:
    w = w.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(w), w)
    return g.detach()


# ----------------------------------------------------------------------------------------- optimiser


@dataclass(frozen=True)
class Solution:
    w: torch.Tensor
    grad_norm: float  # ||grad of the minimised objective||_2 at w
    iterations: int  # L-BFGS iterations
    lbfgs_grad_norm: float  # where L-BFGS stopped (before any Newton polish)
    newton_steps: int  # Newton polish steps taken after L-BFGS


def minimize(
    fn: Callable[[torch.Tensor], torch.Tensor], init: torch.Tensor, grad_tol: float, max_iter: int = 5000, polish: bool = True
) -> Solution:
    """L-BFGS (strong Wolfe) from `init` until the Euclidean gradient norm is <= grad_tol.

    In float64 the line search compares objective values, so L-BFGS stalls near a gradient norm of
    sqrt(machine epsilon * |f| * curvature), about 1e-8 on every problem here, however well
    conditioned. If it stalls above grad_tol, full Newton steps with the dense Hessian (gradients
    only, no line search; the problems here have 650 parameters) finish the job: one step reaches
    1e-13 or below. Raises if both fail.
    """
    w = init.detach().clone().to(DTYPE).requires_grad_(True)
    opt = torch.optim.LBFGS(
        [w],
        lr=1.0,
        max_iter=max_iter,
        max_eval=2 * max_iter,
        history_size=50,
        tolerance_grad=grad_tol / math.sqrt(w.numel()),  # its test is on max |g_i|; this implies ||g||_2 <= grad_tol
        tolerance_change=0.0,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = fn(w)
        loss.backward()
        return loss

    g = math.inf
    for _ in range(5):  # one step() runs up to max_iter iterations; it returns early when a line search makes no progress
        opt.step(closure)
        g_new = float(grad_of(fn, w).norm())
        stalled = g_new >= g
        g = g_new
        if g <= grad_tol or stalled:
            break
    iters = int(opt.state[opt.param_groups[0]["params"][0]].get("n_iter", 0))
    w = w.detach().clone()
    lbfgs_g, steps = g, 0
    while polish and g > grad_tol and steps < 5:
        h = dense_hessian(fn, w)
        grad = grad_of(fn, w).reshape(-1)
        w_new = w - torch.linalg.solve(h, grad).reshape(w.shape)
        g_new = float(grad_of(fn, w_new).norm())
        if not g_new < g:
            break
        w, g, steps = w_new, g_new, steps + 1
    if g > grad_tol:
        raise RuntimeError(f"L-BFGS stalled at gradient norm {lbfgs_g:.3e} and Newton polish at {g:.3e} > {grad_tol:.1e}")
    return Solution(w, g, iters, lbfgs_g, steps)


def fit_original(problem: ConvexProblem, l2: float = ORIGINAL_L2, grad_tol: float = 1e-10) -> Solution:
    """theta_0: mean cross-entropy on all of D (the training split) + l2 * ||W||_F^2, from W = 0."""
    x, y = problem.x_train, problem.y_train
    init = torch.zeros(problem.num_classes, x.shape[1], dtype=DTYPE)
    return minimize(lambda w: cross_entropy(w, x, y) + l2 * w.pow(2).sum(), init, grad_tol)


def fit_retrain(problem: ConvexProblem, w0: torch.Tensor, l2: float = ORIGINAL_L2, grad_tol: float = 1e-10) -> Solution:
    """The gold standard: the same objective on D_r alone (unique minimiser, strongly convex), started from theta_0."""
    x, y = problem.x_retain, problem.y_retain
    return minimize(lambda w: cross_entropy(w, x, y) + l2 * w.pow(2).sum(), w0, grad_tol)


def solve_famr(problem: ConvexProblem, w0: torch.Tensor, lam: float, grad_tol: float = 1e-9) -> Solution:
    """theta* = argmin L_f + lam ||W - W_0||^2 (kl_uniform loss), started from theta_0."""
    return minimize(famr_objective(problem.x_forget, w0, lam), w0, grad_tol)


# -------------------------------------------------------------------------------- second-order model


def dense_hessian(fn: Callable[[torch.Tensor], torch.Tensor], w: torch.Tensor) -> torch.Tensor:
    """The P x P Hessian of fn at w (P = w.numel(), row-major flattening of w)."""
    shape = w.shape
    h = torch.autograd.functional.hessian(lambda v: fn(v.reshape(shape)), w.detach().reshape(-1).to(DTYPE), vectorize=True)
    return h.detach()


def newton_prediction(
    loss_fn: Callable[[torch.Tensor], torch.Tensor], w0: torch.Tensor, lam: float, hessian: torch.Tensor | None = None
) -> torch.Tensor:
    """Damped Newton / influence step delta = -(H(w0) + 2 lam I)^-1 grad loss(w0), shaped like w0.

    It is the exact minimiser (minus w0) of the quadratic model of loss around w0 plus lam ||w - w0||^2.
    """
    h = dense_hessian(loss_fn, w0) if hessian is None else hessian
    g = grad_of(loss_fn, w0).reshape(-1)
    a = h + 2.0 * lam * torch.eye(h.shape[0], dtype=h.dtype)
    return -torch.linalg.solve(a, g).reshape(w0.shape)


def influence_prediction(problem: ConvexProblem, w0: torch.Tensor, l2: float = ORIGINAL_L2) -> torch.Tensor:
    """The influence-function (one Newton step) estimate of Retrain - theta_0: -H_r(w0)^-1 grad J_r(w0),
    J_r = mean CE on D_r + l2 ||W||^2 (docs/theory.md derives = (n_f/n_r) H_r^-1 (grad L_f^CE(w0) + 2 l2 w0))."""
    x, y = problem.x_retain, problem.y_retain
    return newton_prediction(lambda w: cross_entropy(w, x, y) + l2 * w.pow(2).sum(), w0, lam=0.0)


# ------------------------------------------------------------------------------------------- bounds


def gradient_bound(x_forget: torch.Tensor, num_classes: int, kind: str = "mean") -> float:
    """G >= ||grad L_f(W)||_F for EVERY W: sqrt((K-1)/K) * mean_i ||x_i|| ("mean", the one docs/theory.md
    proves and the certificate uses) or * max_i ||x_i|| ("max", looser)."""
    norms = x_forget.norm(dim=1)
    scale = {"mean": norms.mean(), "max": norms.max()}[kind]
    return math.sqrt((num_classes - 1) / num_classes) * float(scale)


def hessian_lipschitz(x_forget: torch.Tensor) -> float:
    """M with ||H_f(W) - H_f(V)||_op <= M ||W - V||_F: sqrt(2) * mean_i ||x_i||^3 (docs/theory.md)."""
    return math.sqrt(2.0) * float(x_forget.norm(dim=1).pow(3).mean())


def drift_bound(param_dist: float, x_norms: torch.Tensor) -> torch.Tensor:
    """Per-sample bound on KL(softmax(W_0 x) || softmax(W_1 x)) given ||W_1 - W_0||_F <= param_dist:
    with r = sqrt(2) * param_dist * ||x||  >=  max_k dz_k - min_k dz_k,  KL <= min(r, r^2 / 8)."""
    r = math.sqrt(2.0) * param_dist * x_norms
    return torch.minimum(r, r.pow(2) / 8.0)


def kl_rows(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """Per-row KL(softmax(logits_p) || softmax(logits_q))."""
    lp, lq = logits_p.log_softmax(1), logits_q.log_softmax(1)
    return (lp.exp() * (lp - lq)).sum(1)


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log(y) against log(x)."""
    return float(np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)), 1)[0])


def _slope(rows: Sequence[dict], key: str) -> float | None:
    return loglog_slope([r["lam"] for r in rows], [r[key] for r in rows]) if len(rows) >= 2 else None


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.reshape(-1) @ b.reshape(-1)) / (a.norm() * b.norm()))


def _acc(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * float(((x @ w.T).argmax(1) == y).double().mean())


# -------------------------------------------------------------------------------------------- table


@dataclass
class Certificate:
    """certificate_table's rows plus the problem-level figures the demo prints above them."""

    rows: list[dict]
    summary: dict


def certify(lams: Sequence[float] = DEFAULT_LAMS, problem: ConvexProblem | None = None, l2: float = ORIGINAL_L2) -> Certificate:
    problem = problem or load_problem()
    xf, k = problem.x_forget, problem.num_classes
    original = fit_original(problem, l2)
    w0 = original.w
    retrain = fit_retrain(problem, w0, l2)
    d_retrain = retrain.w - w0
    d_influence = influence_prediction(problem, w0, l2)

    def loss_f(w):
        return kl_uniform(w, xf)

    h_f = dense_hessian(loss_f, w0)  # H_f(theta_0), shared by every lambda
    g0 = grad_of(loss_f, w0)
    big_g = gradient_bound(xf, k, "mean")
    lip = hessian_lipschitz(xf)

    retained_test = problem.y_test != problem.forget_class
    x_rt = problem.x_test[retained_test]
    x_rt_norms = x_rt.norm(dim=1)
    z0_rt = x_rt @ w0.T
    top2 = z0_rt.topk(2, dim=1).values
    margins_rt = top2[:, 0] - top2[:, 1]
    lf0 = float(kl_uniform(w0, xf))
    forget_test = ~retained_test

    rows = []
    for lam in lams:
        sol = solve_famr(problem, w0, lam)
        w = sol.w
        delta = w - w0
        dist = float(delta.norm())
        g_star = grad_of(loss_f, w)
        residual = float((g_star + 2 * lam * delta).norm())
        identity = float(g_star.norm()) / (2 * lam)
        newton = newton_prediction(loss_f, w0, lam, hessian=h_f)
        z1_rt = x_rt @ w.T
        kl = kl_rows(z0_rt, z1_rt)
        bound = drift_bound(big_g / (2 * lam), x_rt_norms)
        # a retained prediction can flip only where its original margin is <= sqrt(2) ||dW|| ||x|| (docs/theory.md)
        flip_possible = margins_rt <= math.sqrt(2.0) * big_g / (2 * lam) * x_rt_norms
        rows.append(
            {
                "lam": float(lam),
                "param_dist": dist,
                "a_priori_bound": big_g / (2 * lam),  # G / (2 lam)
                "energy_bound": math.sqrt(lf0 / lam),  # F(theta*) <= F(theta_0) and L_f >= 0
                "grad_norm": float(g_star.norm()),  # g* = ||grad L_f(theta*)||
                "stationarity_bound": identity,  # g* / (2 lam)
                "stationarity_residual": residual,
                "stationarity_rel_gap": abs(dist - identity) / dist,
                "newton_rel_dist": float((newton - delta).norm()) / dist,
                "newton_rel_bound": lip * dist / (4 * lam),  # proven: ||delta_N - delta*|| / ||delta*|| <= M ||delta*|| / (4 lam)
                "newton_large_lam_rel_dist": float((-g0 / (2 * lam) - delta).norm()) / dist,  # the lam -> inf limit step
                "drift_kl_mean": float(kl.mean()),
                "drift_kl_max": float(kl.max()),
                "drift_bound_mean": float(bound.mean()),
                "drift_bound_max": float(bound.max()),
                "drift_bound_violations": int((kl > bound).sum()),
                "changed_predictions": float((z1_rt.argmax(1) != z0_rt.argmax(1)).double().mean()),
                "changed_predictions_bound": float(flip_possible.double().mean()),
                "forget_test_acc": _acc(w, problem.x_test[forget_test], problem.y_test[forget_test]),
                "retain_test_acc": _acc(w, x_rt, problem.y_test[retained_test]),
                "forget_kl_uniform": float(kl_uniform(w, xf)),
                "cos_retrain": _cos(delta, d_retrain),
                "cos_influence": _cos(delta, d_influence),
                # as on every head_only run: ||d* - d_IF|| / ||d_IF|| (tends to 1 as FAMR's step shrinks with lam)
                "influence_rel_dist": float((delta - d_influence).norm() / d_influence.norm()),
                "lbfgs_iters": sol.iterations,
                "lbfgs_grad_norm": sol.lbfgs_grad_norm,
                "newton_polish_steps": sol.newton_steps,
            }
        )

    large = [r for r in rows if r["lam"] >= SLOPE_MIN_LAM]
    summary = {
        "n_train": len(problem.y_train),
        "n_forget": len(xf),
        "n_retain_test": int(retained_test.sum()),
        "num_params": problem.num_params,
        "forget_class": problem.forget_class,
        "original_l2": l2,
        "original_grad_norm": original.grad_norm,
        "original_lbfgs_grad_norm": original.lbfgs_grad_norm,
        "original_newton_polish_steps": original.newton_steps,
        "retrain_grad_norm": retrain.grad_norm,
        "retrain_lbfgs_grad_norm": retrain.lbfgs_grad_norm,
        "retrain_newton_polish_steps": retrain.newton_steps,
        "original_forget_test_acc": _acc(w0, problem.x_test[forget_test], problem.y_test[forget_test]),
        "original_retain_test_acc": _acc(w0, x_rt, problem.y_test[retained_test]),
        "retrain_forget_test_acc": _acc(retrain.w, problem.x_test[forget_test], problem.y_test[forget_test]),
        "retrain_retain_test_acc": _acc(retrain.w, x_rt, problem.y_test[retained_test]),
        "retrain_param_dist": float(d_retrain.norm()),
        "influence_vs_retrain_rel_dist": float((d_influence - d_retrain).norm() / d_retrain.norm()),
        "cos_influence_retrain": _cos(d_influence, d_retrain),
        "influence_param_dist": float(d_influence.norm()),
        "forget_kl_uniform_at_theta0": lf0,
        "gradient_bound_G": big_g,
        "gradient_bound_G_max": gradient_bound(xf, k, "max"),
        "grad_norm_at_theta0": float(g0.norm()),
        "hessian_lipschitz_M": lip,
        "newton_slope_lams": [r["lam"] for r in large],
        "newton_slope": _slope(large, "newton_rel_dist"),
        "newton_local_slopes": [_slope(pair, "newton_rel_dist") for pair in zip(rows, rows[1:])],
        "gradient_step_slope": _slope(large, "newton_large_lam_rel_dist"),
        "gradient_step_local_slopes": [_slope(pair, "newton_large_lam_rel_dist") for pair in zip(rows, rows[1:])],
    }
    return Certificate(rows, summary)


def certificate_table(lams: Sequence[float] = DEFAULT_LAMS, problem: ConvexProblem | None = None) -> list[dict]:
    """One row per lambda (keys as in docs/theory.md and the demo's table)."""
    return certify(lams, problem).rows
