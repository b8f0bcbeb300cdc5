"""Gradient ascent (GA, a.k.a. NegGrad): maximise the cross-entropy of the forget set D_f.

    theta* = argmin_theta  -CE(f_theta(D_f), y_f)     (a few small steps from theta_0)

Only D_f is read, so the cost scales with |D_f|; nothing holds the retained classes in place, which
is why GA needs a small learning rate and few epochs. Thudi et al., "Unrolling SGD" (EuroS&P 2022);
Graves et al., "Amnesiac Machine Learning" (AAAI 2021); the published recipe (SGD, lr 1e-4, 5 epochs
on CIFAR-10) is that of Jia et al. (NeurIPS 2023) and Fan et al., "SalUn" (ICLR 2024). Our default
optimizer is Adam (conf/method/grad_ascent.yaml says why).

Checked against the official code of Jia et al., github.com/OPTML-Group/Unlearn-Sparse (``unlearn/GA.py``,
``arg_parser.py``): -CE on D_f, SGD lr 1e-4, 5 epochs, batch 256. Theirs uses weight decay 5e-4 and
updates BatchNorm statistics (``model.train()``); ours defaults to no decay and frozen statistics
(``method.bn``), our choices for a few ascent steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from famr_cli.method import METHODS, UnlearnContext, UnlearningMethod, UnlearnReport
from famr_cli.method.shared import ScheduledSettings, bn_option, cross_entropy, train_with_ce, training_options


def negative_cross_entropy(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -cross_entropy(m, x, y)


@dataclass(frozen=True)
class GradAscentSettings(ScheduledSettings):
    bn: str

    @classmethod
    def parse(cls, c: dict[str, Any]) -> GradAscentSettings:
        shared = training_options(c, suggested_lr=1e-4)
        return cls(**shared, bn=bn_option(c["bn"]))


@METHODS.register("grad_ascent")
class GradAscent(UnlearningMethod[GradAscentSettings]):
    @property
    def reads_retained_data(self) -> bool:
        return False

    def unlearn(self, model: nn.Module, ctx: UnlearnContext) -> UnlearnReport:
        forget = ctx.split.forget_train
        result = train_with_ce(
            model,
            ctx,
            self.settings,
            forget,
            # GA has no augment option: the published recipe ascends on the images of D_f as they are.
            augment=False,
            bn=self.settings.bn,
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
