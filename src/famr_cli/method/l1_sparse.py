"""l1-sparse: fine-tune on the retained set D_r with a decaying l1 penalty on the weights.

    min_theta  CE(f_theta(D_r)) + alpha_t * ||theta||_1,   alpha_t = alpha * (1 - t / T)

Jia et al., "Model Sparsity Can Simplify Machine Unlearning" (NeurIPS 2023): sparsity-aware
unlearning, whose public recipe (OPTML-Group/Unlearn-Sparse, ``FT_l1``) is FT's (SGD, lr 0.01,
momentum 0.9, weight decay 5e-4, 10 epochs) plus alpha = 5e-4 decayed linearly to 0 ("linear
decay"). Their repo steps alpha once per epoch; we decay it per optimizer step along the same line
(our choice), which gives the same schedule without a staircase. As in their repo every parameter,
BatchNorm's included, is penalised.

Checked against github.com/OPTML-Group/Unlearn-Sparse (``unlearn/FT.py`` ``FT_l1``, ``unlearn/impl.py``):
lr 0.01, 10 epochs, alpha decayed linearly over the epochs. The repo leaves alpha to the command line
(its README's ``${alpha}``); 5e-4 is the paper's value, and famr-tune searches it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from famr_cli.checks import number
from famr_cli.errors import FamrError
from famr_cli.method import METHODS, UnlearnContext, UnlearningMethod, UnlearnReport
from famr_cli.method.shared import RetainTrainingSettings, add_to_grads_, train_with_ce, trainable_parameters, training_options


def linear_decay(alpha: float, step: int, total_steps: int) -> float:
    """alpha at step 0, falling on a straight line that reaches 0 at step ``total_steps`` (the end of training)."""
    return alpha * max(0.0, 1.0 - step / max(total_steps, 1))


def l1_norm(params: list[torch.Tensor]) -> float:
    return float(torch.stack(torch._foreach_norm([p.detach() for p in params], 1)).sum())


def add_l1_grad_(params: list[nn.Parameter], alpha: float) -> None:
    """Add d/dtheta alpha*||theta||_1 = alpha*sign(theta) to each gradient with fused multi-tensor ops.

    Adding the (sub)gradient directly keeps the penalty out of the autograd graph, whose per-parameter
    abs/sum nodes would cost a backward pass over every weight.
    """
    if alpha != 0.0:
        add_to_grads_(params, torch._foreach_sign([p.detach() for p in params]), alpha=alpha)


@dataclass(frozen=True)
class L1SparseSettings(RetainTrainingSettings):
    """FT's options and the initial weight of the l1 penalty (0 makes this plain FT)."""

    alpha: float

    @classmethod
    def parse(cls, c: dict[str, Any]) -> L1SparseSettings:
        shared = training_options(c, suggested_lr=0.01)
        if (alpha := number(c["alpha"], "method.alpha", "5e-4")) < 0:
            raise FamrError(f"method.alpha must be >= 0 (got {c['alpha']}); the l1 weight cannot be negative, try method.alpha=5e-4.")
        return cls(**shared, alpha=alpha)


@METHODS.register("l1_sparse")
class L1Sparse(UnlearningMethod[L1SparseSettings]):
    def unlearn(self, model: nn.Module, ctx: UnlearnContext) -> UnlearnReport:
        s = self.settings
        params = trainable_parameters(model)
        retain = ctx.split.retain_train
        l1_before = l1_norm(params)
        current = {"alpha": s.alpha}

        def penalise(step: int, total_steps: int) -> None:
            current["alpha"] = linear_decay(s.alpha, step, total_steps)
            add_l1_grad_(params, current["alpha"])

        result = train_with_ce(
            model,
            ctx,
            s,
            retain,
            augment=s.augment,
            bn="train",
            desc="l1_sparse",
            divergence_hint="lower method.lr or method.alpha",
            after_backward=penalise,
            epoch_metrics=lambda: {"unlearn/alpha": current["alpha"], "unlearn/l1_norm": l1_norm(params)},
        )
        return UnlearnReport(
            epoch_losses=result.epoch_losses,
            certificate={"steps": result.steps, "l1_norm_before": l1_before, "l1_norm_after": l1_norm(params), "alpha": s.alpha},
        )
