"""Solving (H + shift I) x = b for a loss's Hessian H without forming it.

Hessian-vector products come from double backward through a gradient graph built once per point;
conjugate gradient needs nothing else. CG reports the direction where it meets non-positive
curvature instead of returning a meaningless solution, so an indefinite Hessian is detected, not hidden.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch


def hvp_operator(
    loss_fn: Callable[[torch.Tensor], torch.Tensor], params: torch.Tensor
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """(grad L(params), v -> H v) by double backward; the gradient graph is built once and reused."""
    theta = params.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(loss_fn(theta), theta, create_graph=True)

    def matvec(vec: torch.Tensor) -> torch.Tensor:
        if not grad.requires_grad:  # loss linear in theta: zero Hessian
            return torch.zeros_like(vec)
        with torch.enable_grad():
            (hv,) = torch.autograd.grad(grad, theta, vec.to(theta), retain_graph=True, allow_unused=True)
        return torch.zeros_like(vec) if hv is None else hv

    return grad.detach(), matvec


def hvp(loss_fn: Callable[[torch.Tensor], torch.Tensor], params: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
    """Hessian of ``loss_fn`` (a scalar function of the flat vector ``params``) at ``params``, times ``vec``."""
    return hvp_operator(loss_fn, params)[1](vec)


class CGResult(NamedTuple):
    x: torch.Tensor
    iterations: int
    residual: float  # true relative residual ||b - A x|| / ||b||


class NegativeCurvatureError(ArithmeticError):
    """CG met a direction p with p^T A p <= 0: A is not positive definite on the Krylov space."""

    def __init__(self, iteration: int, rayleigh: float, direction: torch.Tensor, x: torch.Tensor):
        super().__init__(f"conjugate gradient met non-positive curvature p^T A p / p^T p = {rayleigh:.3e} at iteration {iteration}")
        self.iteration = iteration
        self.rayleigh = rayleigh
        self.direction = direction
        self.x = x


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, tol: float = 1e-8, max_iter: int | None = None
) -> CGResult:
    """Solve A x = b for SPD A given only ``matvec`` (x0 = 0). Returns (x, iterations, relative residual).

    Stops when the TRUE relative residual ||b - A x|| / ||b|| is <= ``tol``: when the recurrence
    residual says so, the true one is checked and, if round-off made them drift apart, CG restarts
    from the true residual. ``iterations`` counts CG steps (one matvec each; residual checks are
    extra). Raises :class:`NegativeCurvatureError` when p^T A p <= 0 (A not positive definite).
    ``max_iter`` defaults to 10 * len(b); the result may then miss ``tol``: check ``residual``.
    """
    n = b.numel()
    max_iter = 10 * n if max_iter is None else int(max_iter)
    x = torch.zeros_like(b)
    b_norm = float(torch.linalg.vector_norm(b))
    if b_norm == 0.0:
        return CGResult(x, 0, 0.0)
    if not math.isfinite(b_norm):
        raise ValueError("conjugate_gradient: right-hand side is not finite.")
    r = b.clone()
    p = r.clone()
    rs = float(r @ r)
    iterations = 0
    residual = 1.0
    while True:
        if math.sqrt(rs) <= tol * b_norm or iterations >= max_iter:
            r_true = b - matvec(x)
            residual = float(torch.linalg.vector_norm(r_true)) / b_norm
            if residual <= tol or iterations >= max_iter:
                break
            r, p, rs = r_true, r_true.clone(), float(r_true @ r_true)  # residual replacement + restart
        ap = matvec(p)
        pap = float(p @ ap)
        if not pap > 0.0:  # also catches NaN
            raise NegativeCurvatureError(iterations, pap / float(p @ p), p, x)
        alpha = rs / pap
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = float(r @ r)
        p = r + (rs_new / rs) * p
        rs = rs_new
        iterations += 1
    return CGResult(x, iterations, residual)
