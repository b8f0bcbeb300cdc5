"""Gradient ascent (GA, a.k.a. NegGrad): maximise the cross-entropy of the forget set D_f.

    theta* = argmin_theta  -CE(f_theta(D_f), y_f)     (a few small steps from theta_0)

Only D_f is read, so the cost scales with |D_f|; nothing holds the retained classes in place, which
is why GA needs a small learning rate and few epochs. Thudi et al., "Unrolling SGD" (EuroS&P 2022);
Graves et al., "Amnesiac Machine Learning" (AAAI 2021); the recipe is the GA baseline of Jia et al.,
"Model Sparsity Can Simplify Machine Unlearning" (NeurIPS 2023), also used by Fan et al., "SalUn"
(ICLR 2024).

Defaults follow the official code, checked against github.com/OPTML-Group/Unlearn-Sparse at commit
80ba55d (``unlearn/GA.py``, ``unlearn/impl.py``, ``main_forget.py``, ``arg_parser.py``, and the
README's GA command): -CE on D_f with true labels, D_f shuffled and augmented with the training
augmentation, BatchNorm in train mode (``model.train()``: running statistics updated on D_f), SGD
with momentum 0.9 and weight decay 5e-4, lr 1e-4 and 5 epochs (the README's command, which
overrides the arg_parser's lr 0.01 and 10 epochs), batch 256, constant lr (its MultiStepLR
milestones, epochs 91 and 136, are never reached).

famr's earlier defaults stay reachable: ``augment=false bn=eval weight_decay=0`` (D_f as stored,
BatchNorm statistics frozen, no decay).

What still differs from the official code with the defaults:

- Random streams: famr shuffles and augments D_f from its own seeded generators, not DataLoader and
  torchvision transforms, so a seed does not reproduce the official run's batches.
- Augmentation is the experiment's ``train.augment`` (crop 4 px + flip on CIFAR-10 with ResNet-18, as
  in the official code; other experiments use their own, possibly none).
- The official learning-rate warm-up option (off by default) is absent; famr offers cosine and step
  schedules and the adam/adamw optimizers besides the constant-lr SGD default.
- Forward passes follow famr's ``precision`` (bf16 autocast on CUDA by default; the official code runs
  fp32).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from famr_cli.method import METHODS, UnlearnContext, UnlearningMethod, UnlearnReport
from famr_cli.method.shared.settings import ScheduledSettings, bn_option, training_options
from famr_cli.method.shared.training import cross_entropy, train_with_ce


def negative_cross_entropy(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -cross_entropy(m, x, y)


@dataclass(frozen=True)
class GradAscentSettings(ScheduledSettings):
    augment: bool
    bn: str

    @classmethod
    def parse(cls, c: dict[str, Any]) -> GradAscentSettings:
        shared = training_options(c, suggested_lr=1e-4)
        return cls(**shared, bn=bn_option(c["bn"]))


@METHODS.register("grad_ascent")
class GradAscent(UnlearningMethod[GradAscentSettings]):
    @property
    def data_read(self) -> str:
        return "forget"

    def unlearn(self, model: nn.Module, ctx: UnlearnContext) -> UnlearnReport:
        s = self.settings
        forget = ctx.split.forget_train
        result = train_with_ce(
            model,
            ctx,
            s,
            forget,
            augment=s.augment,
            bn=s.bn,
            desc="grad_ascent",
            objective=negative_cross_entropy,
            # -CE is unbounded below: a step too large sends the logits (and the loss) to infinity.
            divergence_hint="lower method.lr or method.epochs",
        )
        return UnlearnReport(
            epoch_losses=result.epoch_losses,
            # The loop minimises -CE; the CE reached on D_f is the figure a reader wants.
            certificate={"steps": result.steps, "forget_samples": len(forget), "last_epoch_forget_ce": -result.epoch_losses[-1]},
        )
