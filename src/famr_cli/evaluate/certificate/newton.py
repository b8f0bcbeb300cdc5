"""The Newton / influence prediction on the classifier head, solved exactly without a dense Hessian.

With the backbone's features fixed (``method.head_only=true``), FAMR's problem on the head
theta = (W, b), logits = features @ W.T + b, is small:

    theta* = argmin  L_f(theta) + lam * ||theta - theta_0||^2

and one damped-Newton step from theta_0 predicts the move (docs/theory.md, the "certificate"):

    delta = -(H_f + 2 lam I)^-1 grad L_f(theta_0),     H_f = Hessian of L_f at theta_0.

The anchor's gradient vanishes at theta_0, so only L_f's gradient enters. For ``kl_uniform``
(cross-entropy to the uniform target) L_f is convex in the logits and the logits are linear in
theta, so H_f is PSD and H_f + 2 lam I is SPD for any lam > 0. For ``entropy`` (KL(p||u)) H_f is
indefinite once predictions are confident; conjugate gradient still solves the system when
2 lam exceeds |lambda_min(H_f)|, and otherwise meets a direction with p^T A p <= 0, which is
reported (``NewtonResult.negative_curvature``) instead of returning a meaningless step.

:func:`influence_removal_step` is the influence-function (Newton) approximation of retraining the
head on the retained data alone: delta_IF = -(H_r + damping I)^-1 grad L_r(theta_0), L_r the mean
cross-entropy with the true labels on D_r. These are our derivations of standard results.

Everything is functional in a flat parameter vector [W.flatten(), b], batched (the loss is one
matmul plus a log-softmax over all features), device-agnostic (it runs where the features live)
and solved in float64 by default, so CG reaches a relative residual of 1e-8 from float32 inputs.
Hessian-vector products come from double backward through a graph built once per solve.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from famr_cli.evaluate.certificate.conjugate_gradient import NegativeCurvatureError, conjugate_gradient, hvp_operator
from famr_cli.evaluate.certificate.head import flatten_head, head_loss, unflatten_head

# Ours: the cross-entropy Hessian of a softmax head is singular. Adding the same vector a to every
# row of W and the same constant c to every bias leaves every softmax (and so the loss) unchanged,
# so H_r has a (D+1)-dimensional null space; an overparameterised head (D >= |D_r|, or a nearly
# separable one whose probabilities saturate) adds many near-zero eigenvalues. A small damping
# makes the system SPD and CG's convergence bounded, while biasing the step by only about
# damping / (lambda + damping) along each eigen-direction lambda of H_r.
DEFAULT_IF_DAMPING = 1e-3


@dataclass(frozen=True)
class SolveOptions:
    """How every head solve runs CG: to relative residual ``tol``, for at most ``max_iter`` iterations
    (None: CG's own cap), in ``dtype`` (None keeps the features' own)."""

    tol: float = 1e-8
    max_iter: int | None = None
    dtype: torch.dtype | None = torch.float64


# --------------------------------------------------------------------------------------------
# The two predictions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewtonResult:
    """One Newton step on the head. ``delta`` is flat [dW.flatten(), db] in the solve's dtype (float64 by default)."""

    delta: torch.Tensor | None  # None when CG met negative curvature
    grad_norm: float  # ||grad L(theta_0)||
    cg_iterations: int
    cg_residual: float  # true relative residual of the linear solve (nan when negative curvature)
    tol: float
    weight_shape: tuple[int, int]
    has_bias: bool
    shift: float  # the multiple of I added to the loss Hessian (2 lam + damping, or damping)
    # p^T H p / p^T p for the direction where CG found p^T (H + shift I) p <= 0 (H = the loss's
    # Hessian alone): an upper bound on lambda_min(H), and <= -shift. None when none was found.
    negative_curvature: float | None = None
    diagnostics: dict[str, float] = field(default_factory=dict)

    @property
    def converged(self) -> bool:
        return self.delta is not None and self.cg_residual <= self.tol

    def split(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(dW, db) views of ``delta``."""
        if self.delta is None:
            raise ValueError("no Newton step: CG met negative curvature (raise lam or damping).")
        return unflatten_head(self.delta, self.weight_shape, self.has_bias)

    def as_dict(self) -> dict[str, float | int | bool | None]:
        """Plain numbers for results.json's certificate."""
        return {
            "delta_norm": None if self.delta is None else float(torch.linalg.vector_norm(self.delta)),
            "grad_norm": self.grad_norm,
            "cg_iterations": self.cg_iterations,
            "cg_residual": self.cg_residual,
            "converged": self.converged,
            "negative_curvature": self.negative_curvature,
            **self.diagnostics,
        }


def _prepare(features: torch.Tensor, weight0: torch.Tensor, bias0: torch.Tensor | None, dtype: torch.dtype | None):
    if features.ndim != 2 or weight0.ndim != 2 or features.shape[1] != weight0.shape[1]:
        raise ValueError(f"features {tuple(features.shape)} do not match a head weight {tuple(weight0.shape)} (need (N, D) and (K, D)).")
    dtype = dtype or features.dtype
    features = features.detach().to(dtype=dtype)
    theta0 = flatten_head(weight0.detach().to(features), None if bias0 is None else bias0.detach().to(features))
    return features, theta0


def _newton_solve(loss_fn, theta0, shift: float, solve: SolveOptions, weight_shape, has_bias, anchor_lam: float = 0.0) -> NewtonResult:
    grad, h_matvec = hvp_operator(loss_fn, theta0)
    grad_norm = float(torch.linalg.vector_norm(grad))
    tol = solve.tol
    common = {"grad_norm": grad_norm, "tol": tol, "weight_shape": tuple(weight_shape), "has_bias": has_bias, "shift": shift}
    try:
        x, iterations, residual = conjugate_gradient(lambda v: h_matvec(v) + shift * v, -grad, tol=tol, max_iter=solve.max_iter)
    except NegativeCurvatureError as err:
        curvature = err.rayleigh - shift
        return NewtonResult(delta=None, cg_iterations=err.iteration, cg_residual=math.nan, negative_curvature=curvature, **common)
    # How far to trust the step: the objective's actual change against its quadratic model's
    # (trust-region ratio). Near 1 the one-step prediction is reliable; a softmax head with confident
    # predictions has a nearly flat Hessian, and a weak anchor then lets the step overshoot badly.
    with torch.no_grad():
        before = float(loss_fn(theta0))
        after = float(loss_fn(theta0 + x)) + anchor_lam * float(x @ x)
    model_change = float(grad @ x) + 0.5 * float(x @ h_matvec(x)) + anchor_lam * float(x @ x)
    diagnostics = {
        "objective_before": before,
        "objective_after": after,
        "predicted_decrease": -model_change,
        "decrease_ratio": (before - after) / -model_change if model_change < 0 else math.nan,
    }
    return NewtonResult(delta=x, cg_iterations=iterations, cg_residual=residual, diagnostics=diagnostics, **common)


@dataclass(frozen=True)
class FamrHead:
    """FAMR's objective on the classifier head over fixed forget features ``features_f``:
    L_f(theta) + lam ||theta - theta_0||^2, theta_0 = (``weight0``, ``bias0``), L_f the mean ``loss``
    (FAMR's ``method.loss``: kl_uniform | entropy). :func:`famr_head_newton` takes one damped-Newton
    step on it and :func:`famr_head_minimiser` solves it; both run on ``features_f``'s device."""

    features_f: torch.Tensor
    weight0: torch.Tensor
    bias0: torch.Tensor | None
    lam: float
    loss: str = "kl_uniform"

    def forget_loss(self, dtype: torch.dtype | None) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """theta_0 and L_f(theta), both in the solve's ``dtype``."""
        features, theta0 = _prepare(self.features_f, self.weight0, self.bias0, dtype)
        return theta0, head_loss(features, self.weight0.shape[0], self.loss, has_bias=self.bias0 is not None)


def famr_head_newton(head: FamrHead, damping: float = 0.0, solve: SolveOptions = SolveOptions()) -> NewtonResult:
    """delta = -(H_f + (2 lam + damping) I)^-1 grad L_f(theta_0) for the head (W, b) on fixed forget features.

    ``solve.dtype`` is the solve's dtype (float64 by default; None keeps the features' own).

    ``diagnostics`` holds the FAMR objective L_f + lam ||theta - theta_0||^2 before and after the
    step, the decrease its quadratic model predicts, and their ratio: the one-step prediction is
    only as good as that ratio is close to 1 (it falls apart for a weak anchor on a confident head).
    """
    lam = head.lam
    if head.loss not in ("kl_uniform", "entropy"):
        raise ValueError(f"FAMR's forget loss is kl_uniform or entropy (got '{head.loss}').")
    shift = 2.0 * float(lam) + float(damping)
    if not shift > 0.0:
        raise ValueError(f"famr_head_newton needs 2*lam + damping > 0 (lam={lam}, damping={damping}): no anchor, no Newton step.")
    theta0, loss_f = head.forget_loss(solve.dtype)
    return _newton_solve(loss_f, theta0, shift, solve, head.weight0.shape, head.bias0 is not None, anchor_lam=float(lam))


@dataclass
class Minimiser:
    """The exact minimiser of FAMR's head objective, as a displacement from theta_0."""

    delta: torch.Tensor
    newton_steps: int
    grad_norm: float  # ||grad (L_f + lam ||theta - theta_0||^2)|| at the returned point
    objective: float


def famr_head_minimiser(head: FamrHead, max_steps: int = 50, grad_tol: float = 1e-9, solve: SolveOptions = SolveOptions()) -> Minimiser:
    """argmin over the head of L_f + lam ||theta - theta_0||^2 by Newton-CG with backtracking.

    For kl_uniform the objective is strongly convex in the head (2 lam > 0), so this is *the*
    solution FAMR's optimizer approaches; comparing FAMR's head with it says whether the
    optimizer converged, while the one-step :func:`famr_head_newton` says how good a single
    second-order step from theta_0 is. The Newton steps stop after ``max_steps`` or once the
    objective's gradient norm is at most ``grad_tol``; ``solve`` runs each step's CG.
    """
    lam = head.lam
    if not lam > 0:
        raise ValueError(f"famr_head_minimiser needs lam > 0 (got {lam}): without the anchor the objective has no minimiser.")
    theta0, loss_f = head.forget_loss(solve.dtype)

    def objective(theta: torch.Tensor) -> torch.Tensor:
        return loss_f(theta) + lam * (theta - theta0).square().sum()

    theta, steps = theta0.clone(), 0
    grad, matvec = hvp_operator(objective, theta)
    while float(grad.norm()) > grad_tol and steps < max_steps:
        try:
            step = conjugate_gradient(matvec, -grad, tol=solve.tol, max_iter=solve.max_iter).x
        except NegativeCurvatureError:
            step = -grad  # entropy loss far from theta_0: fall back to steepest descent
        value, t = float(objective(theta)), 1.0
        with torch.no_grad():
            while float(objective(theta + t * step)) > value + 1e-4 * t * float(grad @ step) and t > 1e-10:
                t *= 0.5  # Armijo backtracking: a full Newton step can overshoot on a confident head
        theta = (theta + t * step).detach()
        steps += 1
        grad, matvec = hvp_operator(objective, theta)
    with torch.no_grad():
        value = float(objective(theta))
    return Minimiser(theta - theta0, steps, float(grad.norm()), value)


def influence_removal_step(
    features_r: torch.Tensor,
    labels_r: torch.Tensor,
    features_f: torch.Tensor | None,
    labels_f: torch.Tensor | None,
    weight0: torch.Tensor,
    bias0: torch.Tensor | None,
    damping: float = DEFAULT_IF_DAMPING,
    solve: SolveOptions = SolveOptions(),
) -> NewtonResult:
    """Influence (Newton) approximation of retraining the head without D_f: -(H_r + damping I)^-1 grad L_r(theta_0).

    L_r is the mean cross-entropy with the true labels on the retained features. Its gradient is
    computed directly rather than assumed to be -(|D_f|/|D_r|) grad L_f (true only when theta_0 is
    a stationary point of the full-data loss, which a trained network's head rarely is exactly).
    The forget set is optional and only feeds diagnostics: ``full_grad_norm`` = ||grad L_D(theta_0)||
    (how far theta_0 is from stationary on D = D_r + D_f) and ``forget_grad_norm``.
    ``damping`` must be > 0 (see DEFAULT_IF_DAMPING). Applied repeatedly from the new head it is a
    damped Newton method on L_r. For class forgetting L_r has no finite minimiser (nothing stops
    the forgotten classes' logits from falling without bound), so read the step as a direction.
    """
    if not damping > 0.0:
        raise ValueError(f"influence_removal_step needs damping > 0 (got {damping}): a softmax head's cross-entropy Hessian is singular.")
    features, theta0 = _prepare(features_r, weight0, bias0, solve.dtype)
    num_classes, has_bias = weight0.shape[0], bias0 is not None
    loss_r = head_loss(features, num_classes, "cross_entropy", labels_r, has_bias)
    result = _newton_solve(loss_r, theta0, float(damping), solve, weight0.shape, has_bias)
    if features_f is not None and labels_f is not None and len(features_f):
        f_feats = features_f.detach().to(features)
        theta = theta0.clone().requires_grad_(True)
        (grad_f,) = torch.autograd.grad(head_loss(f_feats, num_classes, "cross_entropy", labels_f, has_bias)(theta), theta)
        (grad_r,) = torch.autograd.grad(loss_r(theta), theta)
        n_r, n_f = len(features), len(f_feats)
        grad_full = (n_r * grad_r + n_f * grad_f) / (n_r + n_f)
        result.diagnostics.update(
            {"forget_grad_norm": float(torch.linalg.vector_norm(grad_f)), "full_grad_norm": float(torch.linalg.vector_norm(grad_full))}
        )
    return result


# --------------------------------------------------------------------------------------------
# Comparing steps
# --------------------------------------------------------------------------------------------


def relative_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64 (inf when b = 0 and a != 0; 0 when both are 0)."""
    a, b = a.detach().reshape(-1).double(), b.detach().reshape(-1).double().to(a.device)
    num, den = float(torch.linalg.vector_norm(a - b)), float(torch.linalg.vector_norm(b))
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / den


def head_delta(head_before: nn.Module, head_after: nn.Module) -> torch.Tensor:
    """Flat float64 [W_after - W_before, b_after - b_before], in :func:`flatten_head`'s layout."""
    has_bias = getattr(head_before, "bias", None) is not None
    if has_bias != (getattr(head_after, "bias", None) is not None) or head_before.weight.shape != head_after.weight.shape:
        raise ValueError("head_delta: the two heads differ in shape or in having a bias.")
    before = flatten_head(head_before.weight.double(), head_before.bias.double() if has_bias else None)
    after = flatten_head(head_after.weight.double(), head_after.bias.double() if has_bias else None)
    return after.to(before.device) - before
