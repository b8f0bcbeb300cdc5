"""NegGrad+: each step descends on a D_r batch and ascends on a D_f batch, weighted by beta.

    loss = beta * CE(f_theta(x_r), y_r) - (1 - beta) * CE(f_theta(x_f), y_f)

Kurmanji, Triantafillou, Hayes & Triantafillou, "Towards Unbounded Machine Unlearning", NeurIPS 2023
(the SCRUB paper), which introduced this baseline: gradient ascent on D_f alone (method=grad_ascent)
wrecks the retained classes, and the D_r term holds them. Official code: github.com/meghdadk/SCRUB at
commit 98ffb11 (``train_negrad`` in ``thirdparty/repdistiller/helper/loops.py``, ``negative_grad`` and
the CIFAR-10 run of ``MIA_experiments.ipynb``); Deep Unlearn (github.com/xcadet/deepunlearn at
6830ff6, ``munl/unlearning/neggradplus.py``) was read too.

An epoch is one pass over D_r; every D_r batch is paired with the next D_f batch, D_f's batches
cycling for as long as D_r lasts (``zip(retain, cycle(forget))``). The retain batch and the forget
batch go through the model in two forward passes (retain first), so BatchNorm normalises each batch
on its own statistics and, in train mode, updates its running statistics on both.

Defaults are the CIFAR-10 run of ``MIA_experiments.ipynb`` (a ResNet, the only CIFAR-10 notebook that
runs NegGrad+): beta (their ``alpha``) 0.9999, plain SGD (lr 0.01, no momentum, no weight decay, a
constant lr), 5 epochs, D_r batches of 32 and D_f batches of 16, no augmentation, the model in train
mode (``train_negrad`` calls ``model.train()``: BatchNorm statistics updated).

What still differs from their code:

- Random streams: famr shuffles D_r and D_f from its own seeded generators. Their ``itertools.cycle``
  replays the first pass's D_f order for the rest of an epoch; famr draws a fresh order on every pass
  over D_f (each epoch starts a new pass, as theirs does).
- Their other notebooks use other values: the small-scale ones (``small_scale_unlearning.ipynb``, its saved run on
  6-class Lacuna with an All-CNN) beta 0.95 for 10 epochs with the model in eval mode and an l2 pull towards the
  original weights on the D_r term (Deep Unlearn adapts that version, with SGD momentum 0.9, batch 256
  and a pull of weight 0); the Lacuna-10 IC test (``large_scale_ictest.ipynb``) 10 epochs with D_r
  batches of 128 and D_f batches of 32; the CIFAR-100 VGG notebook lr 1e-4 and weight decay 5e-4 with
  batches of 128. famr keeps the CIFAR-10 values for every forget set and offers no l2 pull
  (``bn=eval`` freezes the BatchNorm statistics, which is what eval mode changes in these models).
- The CIFAR-10 values were set for forgetting 100 images of class 5 (``forget_num=100``): there D_f's
  7 batches of 16 are replayed hundreds of times per epoch. For a whole class on ``cifar10_cpu``
  (3,000 rows: 188 D_f batches against 844 D_r steps) each forget row is ascended on about 4.5 times
  per epoch, so the same beta weighs D_f far less in practice; famr-tune searches beta, lr and epochs.
- famr's train/eval split is its own (they hold out 20 % of each class), and forward passes follow
  famr's ``precision`` (bf16 autocast on CUDA by default; theirs run fp32).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from famr_cli.checks import number, whole
from famr_cli.errors import FamrError
from famr_cli.method import METHODS, UnlearnContext, UnlearningMethod, UnlearnReport
from famr_cli.method.shared.settings import ScheduledSettings, bn_option, training_options
from famr_cli.method.shared.training import cross_entropy, train_on_batches
from famr_cli.train.loop import Objective

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class NegGradPlusSettings(ScheduledSettings):
    beta: float
    forget_batch_size: int
    augment: bool
    bn: str

    @classmethod
    def parse(cls, c: dict[str, Any]) -> NegGradPlusSettings:
        shared = training_options(c, suggested_lr=0.01)
        if not 0 < (beta := number(c["beta"], "method.beta", 0.9999)) < 1:
            raise FamrError(
                f"method.beta must be in (0, 1), the weight of CE on D_r against 1 - beta on D_f (got {c['beta']}); "
                "try method.beta=0.9999, or method=finetune for beta 1 and method=grad_ascent for beta 0."
            )
        forget_batch_size = whole(c["forget_batch_size"], "method.forget_batch_size", 16, minimum=1)
        return cls(**shared, beta=beta, forget_batch_size=forget_batch_size, bn=bn_option(c["bn"]))


class RetainWithForgetBatches:
    """One epoch = one pass over ``retain``; before each retain batch is yielded, the next ``forget``
    batch is put in :attr:`forget_batch`, ``forget`` restarting (in a fresh order) whenever it runs out.

    The loop hands the objective (x, y) of the retain batch only, so the objective reads its forget
    batch here; each epoch starts a new pass over ``forget``, like the official ``cycle`` built per epoch.
    """

    def __init__(self, retain, forget):
        if len(forget) == 0:
            raise FamrError("method=neggrad_plus needs a non-empty forget set to ascend on; choose a forget spec that selects samples.")
        self.retain, self.forget = retain, forget
        self.forget_batch: Batch | None = None

    def __len__(self) -> int:
        return len(self.retain)

    def __iter__(self) -> Iterator[Batch]:
        forget = self._cycle()
        for batch in self.retain:
            self.forget_batch = next(forget)
            yield batch

    def _cycle(self) -> Iterator[Batch]:
        while True:
            yield from self.forget


def neggrad_plus_objective(batches: RetainWithForgetBatches, beta: float) -> Objective:
    """beta * CE on the retain batch - (1 - beta) * CE on its paired forget batch, retain forward first."""

    def objective(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        retain_ce = cross_entropy(m, x, y)
        x_f, y_f = batches.forget_batch
        return beta * retain_ce - (1 - beta) * cross_entropy(m, x_f, y_f)

    return objective


@METHODS.register("neggrad_plus")
class NegGradPlus(UnlearningMethod[NegGradPlusSettings]):
    @property
    def data_read(self) -> str:
        return "forget+retain"

    def unlearn(self, model: nn.Module, ctx: UnlearnContext) -> UnlearnReport:
        s = self.settings
        forget, retain = ctx.split.forget_train, ctx.split.retain_train
        batches = RetainWithForgetBatches(
            ctx.batches(retain, s.batch_size, augment=s.augment), ctx.batches(forget, s.forget_batch_size, augment=s.augment)
        )
        result = train_on_batches(
            model,
            ctx,
            s,
            batches,
            bn=s.bn,
            desc="neggrad_plus",
            objective=neggrad_plus_objective(batches, s.beta),
            # The -CE term is unbounded below: a large enough lr or 1 - beta sends it to -infinity.
            divergence_hint="lower method.lr or raise method.beta",
        )
        return UnlearnReport(
            epoch_losses=result.epoch_losses,
            certificate={"steps": result.steps, "forget_samples": len(forget), "retain_samples": len(retain)},
        )
