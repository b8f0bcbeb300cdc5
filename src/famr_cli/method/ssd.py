"""SSD: Selective Synaptic Dampening, unlearning without a single gradient step.

Foster, Schoepf & Brintrup, "Fast Machine Unlearning Without Retraining Through Selective Synaptic
Dampening", AAAI 2024. Official code: github.com/if-loops/selective-synaptic-dampening at commit
cdfdc0e (``src/ssd.py``: ``ParameterPerturber.calc_importance`` and ``modify_weight``;
``src/forget_full_class_main.py`` and ``ssd_tuning`` in ``src/forget_full_class_strategies.py``).

With diagonal importances I_D (training set D = D_r ∪ D_f) and I_f (forget set D_f), every
parameter element with I_f > alpha * I_D is multiplied by beta = min(lambda * I_D / I_f, 1); every
other element is left exactly as it was. All trainable parameters are eligible, BatchNorm's weight
and bias and the head included; buffers (BatchNorm running statistics) are never touched.

Importance, as in their code: the model in eval mode, no augmentation, one backward of the
batch-mean cross-entropy per unshuffled mini-batch, and I = (sum over batches of the squared
gradient) / (number of batches). That is the mean of squared batch-mean gradients, not the mean of
per-sample squared gradients. The batch size does not cancel in I_f / I_D: per element, a batch
of B samples drawn at random has an expected squared batch-mean gradient of mean^2 + variance / B,
and only the variance part shrinks with B. A trained model's mean gradient over D is small, over
D_f it need not be, so a larger batch tends to lower I_D more than I_f and to select more
elements: the batch size is part of the recipe (64, theirs).

Defaults follow their full-class entry: alpha=10, lambda=1, batches of 64, I_f over D_f in dataset
order, and I_D over D ordered as they build it (``fisher_order: class_sorted``): D_r class by class
in ascending class order, each class's rows in dataset order, then D_f; batches straddle the class
boundaries. In that order the D_f rows close the I_D pass, so when |D_r| is a multiple of the batch
they form exactly I_f's batches and I_D >= (batches of D_f / batches of D) * I_f element by element:
I_f / I_D then never exceeds (batches of D) / (batches of D_f), about |D| / |D_f| (otherwise D_f's
batches shift by a few rows and the bound holds only roughly). That is 100 or 20 for the
CIFAR-100/20 classes their alpha=10 was set for, but 10 for one CIFAR-10 class, where alpha=10
selects almost nothing (there is no CIFAR-10 full-class script in their code): famr-tune searches
alpha (docs/tuning.md). ``fisher_order: dataset`` batches D in dataset order, famr's behaviour
before this option existed (then with ``fisher_batch_size: 256``).

What still differs from their code: their random-forgetting entry (``forget_random_main.py``)
uses batches of 128 and ``random_split``'s random order for D_r and D_f, where famr keeps the
defaults above; their input transform normalises every dataset with CIFAR-100 statistics, famr with
the dataset's own; their D is the whole CIFAR training set (50,000 images), famr's the training
rows left after any held-out validation split (``dataset.val_per_class``); famr runs the forward
pass under the run's autocast (bf16 on CUDA by default), theirs in fp32.
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
from famr_cli.method.shared.pieces import run_autocast
from famr_cli.method.shared.training import trainable_parameters
from famr_cli.statistic_memo import memoised

# How I_D orders D's rows into batches: the official code's class-sorted rebuild, or the dataset order.
FISHER_ORDERS = ("class_sorted", "dataset")


def importance_rows(labels: torch.Tensor, retain: torch.Tensor, forget: torch.Tensor, order: str) -> torch.Tensor:
    """The training rows of D in the order I_D batches them.

    ``class_sorted``: ``retain`` class by class (ascending class, dataset order within a class),
    then ``forget`` in dataset order. ``dataset``: every row of ``labels`` in dataset order.
    """
    if order == "dataset":
        return torch.arange(len(labels))
    retain, forget = retain.cpu().sort().values, forget.cpu().sort().values
    by_class = retain[torch.sort(labels.cpu()[retain], stable=True).indices]
    return torch.cat([by_class, forget])


def fisher_importance(
    model: nn.Module, ctx: UnlearnContext, indices: torch.Tensor, params: list[nn.Parameter], batch_size: int
) -> list[torch.Tensor]:
    """(Sum over the unshuffled mini-batches of rows ``indices`` of (d mean CE / d theta)^2) / batches, model in eval mode."""
    was_training = model.training
    model.eval()
    importances = [torch.zeros_like(p) for p in params]
    batches = ctx.batches(indices, batch_size, shuffle=False)
    try:
        for x, y in batches:
            with run_autocast(ctx, x.device.type):
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
    fisher_order: str

    KEYS = {"lam": "lambda"}

    @classmethod
    def parse(cls, c: dict[str, Any]) -> SSDSettings:
        if (alpha := number(c["alpha"], "method.alpha", 10)) <= 0:
            raise FamrError(f"method.alpha must be positive (got {c['alpha']}); try method.alpha=10.")
        if (lam := number(c["lam"], "method.lambda", 1)) <= 0:
            raise FamrError(f"method.lambda must be positive (got {c['lam']}); try method.lambda=1.")
        batch_size = whole(c["fisher_batch_size"], "method.fisher_batch_size", 64, minimum=1)
        if (order := c["fisher_order"]) not in FISHER_ORDERS:
            raise FamrError(
                f"method.fisher_order must be 'class_sorted' (D_r class by class, then D_f, as the official code) "
                f"or 'dataset' (D in dataset order) (got '{order}'); use e.g. method.fisher_order=class_sorted."
            )
        return cls(alpha=alpha, lam=lam, fisher_batch_size=batch_size, fisher_order=str(order))


@METHODS.register("ssd")
class SSD(UnlearningMethod[SSDSettings]):
    @property
    def data_read(self) -> str:
        return "all"  # I_D is taken over the whole training set, D_r and D_f

    def unlearn(self, model: nn.Module, ctx: UnlearnContext) -> UnlearnReport:
        s = self.settings
        params = trainable_parameters(model)
        rows = importance_rows(ctx.data.y_train, ctx.split.retain_train, ctx.split.forget_train, s.fisher_order)
        # Neither importance depends on alpha or lambda, the searched values: a study's trials share them (statistic_memo).
        importance_d = memoised(
            "ssd_importance_d",
            (s.fisher_batch_size, s.fisher_order),
            model,
            ctx,
            lambda: fisher_importance(model, ctx, rows, params, s.fisher_batch_size),
        )
        importance_f = memoised(
            "ssd_importance_f",
            (s.fisher_batch_size,),
            model,
            ctx,
            lambda: fisher_importance(model, ctx, ctx.split.forget_train, params, s.fisher_batch_size),
        )
        dampened, total = dampen_(params, importance_d, importance_f, s.alpha, s.lam)
        fraction = dampened / max(total, 1)
        ctx.log_metrics({"unlearn/dampened_fraction": fraction})
        return UnlearnReport(certificate={"dampened_fraction": fraction, "dampened_elements": dampened})
