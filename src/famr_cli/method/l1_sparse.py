"""l1-sparse: fine-tune on the retained set D_r with a decaying l1 penalty on the weights.

    min_theta  CE(f_theta(D_r)) + alpha_e * ||theta||_1,   alpha_e = alpha * (1 - e / E)

for the 0-based epoch e of E (alpha, 0.9 alpha, ..., alpha / E with E = 10: never 0), the l1 norm
summed over all parameters, BatchNorm's included. Jia et al., "Model Sparsity Can Simplify Machine
Unlearning" (NeurIPS 2023): sparsity-aware unlearning.

Defaults follow the official code, checked against github.com/OPTML-Group/Unlearn-Sparse at commit
80ba55d (``unlearn/FT.py``: ``FT_l1``, ``FT_iter`` and ``l1_regularization``; ``unlearn/FT_prune.py``,
which the README's l1-sparse command runs and which calls ``FT_l1``; ``unlearn/impl.py``,
``arg_parser.py``): FT on D_r (shuffled, training augmentation, BatchNorm in train mode), SGD with
momentum 0.9 and weight decay 5e-4, lr 0.01, 10 epochs, batch 256, constant lr, plus the penalty
above with alpha stepped once per epoch (``alpha_schedule=per_epoch``).
``alpha_schedule=per_step`` is famr's earlier schedule: alpha * (1 - t / T) at optimizer step t of
T, a straight line from alpha to 0 without the staircase.

alpha: the README leaves it to the user (``--alpha ${alpha}``), and the arg_parser's default (0.2) is
far above any value that trains; the default 5e-4 is famr's choice, and famr-tune searches alpha.

What still differs from the official code with the defaults:

- The penalty's gradient, alpha_e * sign(theta), is added to the gradient directly rather than
  back-propagated through the l1 norm (the same subgradient, sign(0) = 0 included), so the epoch loss
  famr logs is the cross-entropy alone (the official loss includes the penalty).
- The official ``--no-l1-epochs`` option (default 0: the penalty in every epoch) is absent.
- Random streams: famr shuffles and augments D_r from its own seeded generators, so a seed does not
  reproduce the official run's batches; the augmentation is the experiment's ``train.augment`` (crop
  4 px + flip on CIFAR-10 with ResNet-18, as in the official code).
- The official learning-rate warm-up option (off by default) is absent; famr offers cosine and step
  schedules besides the constant default; forward passes follow famr's ``precision`` (bf16 autocast
  on CUDA by default; the official code runs fp32).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from famr_cli.checks import number
from famr_cli.errors import FamrError
from famr_cli.method import METHODS, UnlearnContext, UnlearningMethod, UnlearnReport
from famr_cli.method.shared.settings import RetainTrainingSettings, training_options
from famr_cli.method.shared.training import add_to_grads_, train_with_ce, trainable_parameters

ALPHA_SCHEDULES = ("per_epoch", "per_step")


def linear_decay(alpha: float, step: int, total_steps: int) -> float:
    """alpha at step 0, falling on a straight line that reaches 0 at step ``total_steps`` (the end of training)."""
    return alpha * max(0.0, 1.0 - step / max(total_steps, 1))


def epoch_decay(alpha: float, epoch: int, epochs: int) -> float:
    """The official schedule: alpha * (1 - epoch / epochs) for the 0-based ``epoch``, alpha / epochs in the last."""
    return alpha * (1.0 - min(epoch, epochs - 1) / epochs)


def scheduled_alpha(schedule: str, alpha: float, step: int, total_steps: int, epochs: int) -> float:
    """The l1 weight at the 0-based optimizer ``step`` of ``total_steps`` (``epochs`` equal epochs)."""
    if schedule == "per_step":
        return linear_decay(alpha, step, total_steps)
    return epoch_decay(alpha, step // max(total_steps // epochs, 1), epochs)


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
    """FT's options, the initial weight of the l1 penalty (0 makes this plain FT) and how it decays."""

    alpha: float
    alpha_schedule: str

    @classmethod
    def parse(cls, c: dict[str, Any]) -> L1SparseSettings:
        shared = training_options(c, suggested_lr=0.01)
        if (alpha := number(c["alpha"], "method.alpha", "5e-4")) < 0:
            raise FamrError(f"method.alpha must be >= 0 (got {c['alpha']}); the l1 weight cannot be negative, try method.alpha=5e-4.")
        if c["alpha_schedule"] not in ALPHA_SCHEDULES:
            raise FamrError(
                f"method.alpha_schedule must be 'per_epoch' (alpha * (1 - e/E) in epoch e) or 'per_step' "
                f"(alpha falling linearly to 0 step by step) (got '{c['alpha_schedule']}'); use method.alpha_schedule=per_epoch."
            )
        return cls(**shared, alpha=alpha, alpha_schedule=str(c["alpha_schedule"]))


@METHODS.register("l1_sparse")
class L1Sparse(UnlearningMethod[L1SparseSettings]):
    @property
    def data_read(self) -> str:
        return "retain"  # fine-tuning on D_r with an l1 penalty

    def unlearn(self, model: nn.Module, ctx: UnlearnContext) -> UnlearnReport:
        s = self.settings
        params = trainable_parameters(model)
        retain = ctx.split.retain_train
        l1_before = l1_norm(params)
        current = {"alpha": s.alpha}

        def penalise(step: int, total_steps: int) -> None:
            current["alpha"] = scheduled_alpha(s.alpha_schedule, s.alpha, step, total_steps, s.epochs)
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
