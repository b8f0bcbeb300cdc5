"""FAMR's certificate on a convex model (docs/theory.md): every bound checked on the real, exactly solved table."""

from __future__ import annotations

import math

import pytest
import torch

from famr_lab import convex_certificate as convex
from famr_lab.convex_certificate import (
    DEFAULT_LAMS,
    certify,
    dense_hessian,
    drift_bound,
    gradient_bound,
    kl_rows,
    kl_uniform,
    load_problem,
    minimize,
    newton_prediction,
)


@pytest.fixture(scope="module")
def problem():
    return load_problem()


@pytest.fixture(scope="module")
def cert(problem):
    return certify(DEFAULT_LAMS, problem)


def test_table_spans_three_decades_and_theta0_is_converged(cert):
    lams = [r["lam"] for r in cert.rows]
    assert len(lams) >= 5 and max(lams) / min(lams) >= 1000
    assert cert.summary["original_grad_norm"] <= 1e-10
    # the original model is a real classifier, and forgetting is needed: it knows class 0
    assert cert.summary["original_retain_test_acc"] > 90 and cert.summary["original_forget_test_acc"] > 90


def test_a_stationarity_identity_holds_at_the_solution(cert):
    for r in cert.rows:
        assert r["stationarity_residual"] <= 1e-6, r
        # ||theta* - theta_0|| = ||grad L_f(theta*)|| / (2 lam), up to residual / (2 lam)
        assert abs(r["param_dist"] - r["stationarity_bound"]) <= r["stationarity_residual"] / (2 * r["lam"]) + 1e-12
        assert r["stationarity_rel_gap"] <= 1e-6, r


def test_b_newton_prediction_error_shrinks_like_a_power_of_lambda(cert):
    by_lam = {r["lam"]: r for r in cert.rows}
    assert by_lam[10.0]["newton_rel_dist"] < by_lam[1.0]["newton_rel_dist"] / 5
    large = [r for r in cert.rows if r["lam"] >= convex.SLOPE_MIN_LAM]
    errs = [r["newton_rel_dist"] for r in large]
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    # at least O(1/lam) over lam >= 1; docs/theory.md proves O(1/lam^2) asymptotically: the last local slope is near -2
    assert cert.summary["newton_slope"] <= -1.0
    assert cert.summary["newton_local_slopes"][-1] <= -1.5
    # while the Hessian-free step -grad L_f(theta_0)/(2 lam) is only O(1/lam)
    assert -1.5 <= cert.summary["gradient_step_local_slopes"][-1] <= -0.5
    for r in cert.rows:  # the proven bound ||d_N - d*|| / ||d*|| <= M ||d*|| / (4 lam)
        assert r["newton_rel_dist"] <= r["newton_rel_bound"], r
    assert by_lam[10.0]["newton_rel_dist"] < 0.01


def test_c_parameter_distance_is_within_the_a_priori_gradient_bound(cert, problem):
    g = cert.summary["gradient_bound_G"]
    assert g == pytest.approx(math.sqrt(0.9) * float(problem.x_forget.norm(dim=1).mean()))
    assert g <= cert.summary["gradient_bound_G_max"]
    assert cert.summary["grad_norm_at_theta0"] <= g
    for r in cert.rows:
        assert r["grad_norm"] <= g
        assert r["param_dist"] <= r["a_priori_bound"] == pytest.approx(g / (2 * r["lam"]))
        assert r["param_dist"] <= r["energy_bound"]  # the lam^(-1/2) bound, from F(theta*) <= F(theta_0)


def test_d_output_drift_on_retained_test_data_is_within_its_bound(cert):
    for r in cert.rows:
        assert r["drift_bound_violations"] == 0, r
        assert r["drift_kl_mean"] <= r["drift_kl_max"] <= r["drift_bound_max"]
        assert r["drift_kl_mean"] <= r["drift_bound_mean"]
    # the drift falls as lambda grows
    kls = [r["drift_kl_max"] for r in cert.rows]
    assert all(a >= b for a, b in zip(kls, kls[1:])), kls


def test_forgetting_gets_stronger_as_lambda_falls(cert):
    small, large = cert.rows[0], cert.rows[-1]
    assert small["forget_kl_uniform"] < large["forget_kl_uniform"]
    assert small["forget_test_acc"] <= large["forget_test_acc"]


def test_gradient_bound_holds_for_arbitrary_weights(problem):
    """G bounds ||grad L_f|| everywhere, not only where the solver went: random and extreme W."""
    torch.manual_seed(0)
    xf, k = problem.x_forget, problem.num_classes
    g = gradient_bound(xf, k)
    for scale in (0.1, 1.0, 10.0, 1e3):
        w = (torch.randn(k, xf.shape[1], dtype=torch.float64) * scale).requires_grad_(True)
        (grad,) = torch.autograd.grad(kl_uniform(w, xf), w)
        assert float(grad.norm()) <= g


def test_drift_bound_holds_for_arbitrary_perturbations():
    torch.manual_seed(0)
    for scale in (1e-3, 0.1, 1.0, 10.0):
        x = torch.randn(200, 9, dtype=torch.float64)
        w0 = torch.randn(7, 9, dtype=torch.float64) * 2
        d = torch.randn(7, 9, dtype=torch.float64)
        d *= scale / d.norm()
        kl = kl_rows(x @ w0.T, x @ (w0 + d).T)
        assert bool((kl <= drift_bound(scale, x.norm(dim=1)) + 1e-15).all())


def test_newton_prediction_is_exact_on_a_quadratic_objective():
    torch.manual_seed(0)
    n = 12
    a = torch.randn(n, n, dtype=torch.float64)
    a = a @ a.T  # PSD
    b = torch.randn(n, dtype=torch.float64)
    w0 = torch.randn(n, dtype=torch.float64)

    def quad(w):
        return 0.5 * w @ a @ w + b @ w

    for lam in (0.01, 1.0, 100.0):
        delta = newton_prediction(quad, w0, lam)
        exact = -torch.linalg.solve(a + 2 * lam * torch.eye(n, dtype=torch.float64), a @ w0 + b)
        assert torch.allclose(delta, exact, rtol=1e-10, atol=1e-12)
        solved = minimize(lambda w, lam=lam: quad(w) + lam * (w - w0).pow(2).sum(), w0, grad_tol=1e-10).w - w0
        assert torch.allclose(delta, solved, rtol=1e-7, atol=1e-9)


def test_newton_step_tends_to_the_scaled_gradient_as_lambda_grows(cert, problem):
    """delta ~= -grad L_f(theta_0) / (2 lam) for large lam; the exact solution follows it."""
    errs = [r["newton_large_lam_rel_dist"] for r in cert.rows if r["lam"] >= 1.0]
    assert all(a > b for a, b in zip(errs, errs[1:])) and errs[-1] < 0.05
    torch.manual_seed(0)
    xf = problem.x_forget
    w0 = 0.01 * torch.randn(problem.num_classes, xf.shape[1], dtype=torch.float64)

    def loss_f(w):
        return kl_uniform(w, xf)

    h = dense_hessian(loss_f, w0)
    g0 = torch.autograd.functional.jacobian(loss_f, w0)
    for lam in (1e2, 1e4):
        delta = newton_prediction(loss_f, w0, lam, hessian=h)
        rel = float((delta * 2 * lam + g0).norm() / g0.norm())
        assert rel <= float(torch.linalg.eigvalsh(h).max()) / (2 * lam) + 1e-12


def test_autograd_hessian_matches_the_closed_form(problem):
    """H_f = mean_i (diag p_i - p_i p_i^T) kron x_i x_i^T for the linear softmax model (row-major W)."""
    torch.manual_seed(1)
    xf = problem.x_forget[:20]
    k, d = problem.num_classes, xf.shape[1]
    w = torch.randn(k, d, dtype=torch.float64)
    h = dense_hessian(lambda v: kl_uniform(v, xf), w)
    p = (xf @ w.T).softmax(1)
    closed = sum(torch.kron(torch.diag(pi) - torch.outer(pi, pi), torch.outer(xi, xi)) for pi, xi in zip(p, xf)) / len(xf)
    assert torch.allclose(h, closed, atol=1e-12)
    assert float(torch.linalg.eigvalsh(h).min()) >= -1e-12  # convex
