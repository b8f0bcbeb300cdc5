"""The certificate figures famr measures on every run (docs/theory.md, "What famr measures on every run").

- Stationarity (FAMR): at a stationary point of L_f(θ) + λ‖θ-θ₀‖², ∇L_f(θ*) = -2λ(θ*-θ₀), so
  ‖θ*-θ₀‖ = ‖∇L_f(θ*)‖/(2λ). The residual ‖∇L_f(θ*) + 2λ(θ*-θ₀)‖ says how far from such a point the
  optimizer stopped; g* = ‖∇L_f(θ*)‖ is measured with one full pass over D_f.
- Output drift (every method): KL(original ‖ unlearned) on the retained test images, and the share of
  them whose predicted class changed — what unlearning cost the data it should have left alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn as nn


def mean_gradient(
    model: nn.Module, params: list[nn.Parameter], loss_fn: Callable[[torch.Tensor], torch.Tensor], batches: Iterable
) -> list[torch.Tensor]:
    """∇ of the mean loss over all samples of ``batches`` (each batch's mean weighted by its size)."""
    total = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    count = 0
    for x, _y in batches:
        grads = torch.autograd.grad(loss_fn(model(x)), params, allow_unused=True)
        n = x.shape[0]
        for acc, g in zip(total, grads):
            if g is not None:
                acc.add_(g.double(), alpha=n)
        count += n
    return [g / max(count, 1) for g in total]


def _norm(tensors: Iterable[torch.Tensor]) -> float:
    return math.sqrt(sum(float(t.double().square().sum()) for t in tensors))


def stationarity(grad_f: list[torch.Tensor], params: list[nn.Parameter], theta0: list[torch.Tensor | None], lam: float) -> dict[str, float]:
    """The identity's two sides and the residual; ``theta0[i]`` is None for a trainable parameter without anchor."""
    anchor = [
        torch.zeros_like(g) if t0 is None else 2.0 * lam * (p.detach().double() - t0.double()) for g, p, t0 in zip(grad_f, params, theta0)
    ]
    dist = _norm(p.detach().double() - t0.double() for p, t0 in zip(params, theta0) if t0 is not None)
    g_star = _norm(grad_f)
    bound = g_star / (2.0 * lam) if lam > 0 else math.inf
    return {
        "grad_norm": g_star,
        "stationarity_bound": bound,
        "stationarity_residual": _norm(g + a for g, a in zip(grad_f, anchor)),
        # |‖θ*-θ₀‖ - g*/(2λ)| / ‖θ*-θ₀‖: 0 at an exact stationary point (when every moving weight is anchored).
        "stationarity_rel_gap": abs(dist - bound) / dist if dist > 0 and math.isfinite(bound) else math.nan,
    }


def output_drift(original_probs: torch.Tensor, unlearned_probs: torch.Tensor, rows: torch.Tensor) -> dict[str, float]:
    """Mean and max KL(original ‖ unlearned) over ``rows`` of the test set, and the share of changed predictions."""
    if rows.numel() == 0:
        return {"drift_kl_mean": math.nan, "drift_kl_max": math.nan, "changed_predictions": math.nan}
    p0 = original_probs[rows].double()
    p1 = unlearned_probs[rows].double()
    # 0·log 0 = 0; the floor keeps log p1 finite where the unlearned model gives a class exactly 0.
    kl = torch.where(p0 > 0, p0 * (p0.clamp_min(1e-300).log() - p1.clamp_min(1e-300).log()), torch.zeros_like(p0)).sum(dim=1)
    changed = (p0.argmax(dim=1) != p1.argmax(dim=1)).double().mean()
    return {"drift_kl_mean": float(kl.mean()), "drift_kl_max": float(kl.max()), "changed_predictions": float(changed)}
