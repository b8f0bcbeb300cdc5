"""SSD: Selective Synaptic Dampening, unlearning without a single gradient step.

Foster, Schoepf & Brintrup, "Fast Machine Unlearning Without Retraining Through Selective Synaptic
Dampening", AAAI 2024.

With diagonal Fisher importances I_D (whole training set D) and I_f (forget set D_f), every
parameter element that matters far more to D_f than to D, I_f > alpha * I_D, is multiplied by
beta = min(lambda * I_D / I_f, 1); every other element is left exactly as it was.

Importance estimate: like the authors' code, the mean over mini-batches of the squared gradient of
the batch-mean cross-entropy (squared mean gradient per batch), not the mean of per-sample squared
gradients: one backward per batch instead of one per sample. I_D and I_f use the same batch size,
so the batch-size scaling this estimate carries cancels in I_f / I_D.

Checked against the official code, github.com/if-loops/selective-synaptic-dampening (``src/ssd.py``,
``ParameterPerturber.calc_importance`` and ``modify_weight``; ``src/forget_full_class_strategies.py``):
same importance, selection, dampening (exponent 1, capped at 1) and parameter set (BatchNorm and the
head included). Differences: their I_D batches follow a class-by-class rebuilt training set, ours the
dataset order; their batch is 64, ours 256. Their alpha=10 was set for CIFAR-100/20 full-class
forgetting (|D|/|D_f| = 100 or 20); when gradient noise dominates, I_f / I_D is at most about
|D|/|D_f|, which is 10 for one CIFAR-10 class, so alpha=10 selects almost nothing there: famr-tune
searches alpha (docs/tuning.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from famr_cli.checks import number, whole
from famr_cli.errors import FamrError
from famr_cli.method import METHODS, MethodSettings, UnlearnContext, UnlearningMethod, UnlearnReport
from famr_cli.method.shared import trainable_parameters


def fisher_importance(
    model: nn.Module, ctx: UnlearnContext, indices: torch.Tensor, params: list[nn.Parameter], batch_size: int
) -> list[torch.Tensor]:
    """Mean over the mini-batches of rows ``indices`` of (d mean CE / d theta)^2, model in eval mode."""
    was_training = model.training
    model.eval()
    importances = [torch.zeros_like(p) for p in params]
    batches = ctx.batches(indices, batch_size, shuffle=False)
    try:
        for x, y in batches:
            with torch.autocast(x.device.type, dtype=ctx.autocast or torch.bfloat16, enabled=ctx.autocast is not None):
                loss = F.cross_entropy(model(x).float(), y)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            present = [(imp, g) for imp, g in zip(importances, grads) if g is not None]
            if present:
                squares = [g for _, g in present]
                torch._foreach_addcmul_([imp for imp, _ in present], squares, squares)
    finally:
        model.train(was_training)
    torch._foreach_div_(importances, max(len(batches), 1))
    return importances


@torch.no_grad()
def dampen_(
    params: list[nn.Parameter], importance_d: list[torch.Tensor], importance_f: list[torch.Tensor], alpha: float, lam: float
) -> tuple[int, int]:
    """Scale the selected elements of ``params`` in place; returns (dampened elements, all elements)."""
    dampened = 0
    for p, i_d, i_f in zip(params, importance_d, importance_f):
        selected = i_f > alpha * i_d
        # I_f > alpha * I_D >= 0 wherever selected, so the clamp only guards the unselected entries.
        beta = (lam * i_d / i_f.clamp_min(torch.finfo(i_f.dtype).tiny)).clamp_(max=1.0)
        p.mul_(torch.where(selected, beta, torch.ones_like(beta)))
        dampened += int(selected.sum())
    return dampened, sum(p.numel() for p in params)


@dataclass(frozen=True)
class SSDSettings(MethodSettings):
    alpha: float
    lam: float
    fisher_batch_size: int

    KEYS = {"lam": "lambda"}

    @classmethod
    def parse(cls, c: dict[str, Any]) -> SSDSettings:
        if (alpha := number(c["alpha"], "method.alpha", 10)) <= 0:
            raise FamrError(f"method.alpha must be positive (got {c['alpha']}); try method.alpha=10.")
        if (lam := number(c["lam"], "method.lambda", 1)) <= 0:
            raise FamrError(f"method.lambda must be positive (got {c['lam']}); try method.lambda=1.")
        return cls(alpha=alpha, lam=lam, fisher_batch_size=whole(c["fisher_batch_size"], "method.fisher_batch_size", 256, minimum=1))


@METHODS.register("ssd")
class SSD(UnlearningMethod[SSDSettings]):
    def unlearn(self, model: nn.Module, ctx: UnlearnContext) -> UnlearnReport:
        s = self.settings
        params = trainable_parameters(model)
        everything = torch.arange(len(ctx.data.y_train))
        importance_d = fisher_importance(model, ctx, everything, params, s.fisher_batch_size)
        importance_f = fisher_importance(model, ctx, ctx.split.forget_train, params, s.fisher_batch_size)
        dampened, total = dampen_(params, importance_d, importance_f, s.alpha, s.lam)
        fraction = dampened / max(total, 1)
        ctx.log_metrics({"unlearn/dampened_fraction": fraction})
        return UnlearnReport(certificate={"dampened_fraction": fraction, "dampened_elements": dampened})
