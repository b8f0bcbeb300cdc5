"""SalUn: random-label unlearning restricted to the weights most salient for the forget set.

Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency", ICLR 2024.

1. Saliency: g = sum over D_f's batches of the gradient of the batch-mean cross-entropy (true
   labels, model in eval mode, D_f augmented with the training augmentation when ``augment`` is
   true); the mask keeps the ``mask_ratio`` fraction of entries with the largest |g| over all
   trainable parameters (one global threshold), 0 elsewhere.
2. Unlearning: random labelling (RL) under the mask, with random_label's core and options
   (:func:`famr_cli.method.shared.relabel.random_label_batches`): by default each epoch one pass over D_f
   with labels redrawn per batch from all K classes (``relabel=per_batch``), then one pass over D_r
   with true labels (``passes=sequential``), BatchNorm in train mode, constant lr.
   ``relabel=fixed_wrong passes=mixed`` is famr's earlier behaviour (one wrong label per forget
   sample for the run, D_f and D_r shuffled together).
3. Masked-out weights never move. famr adds the weight decay to the gradient, multiplies the
   gradient by the mask and gives the optimizer no decay of its own, so a masked-out entry's gradient
   is exactly 0, its momentum stays 0 and it keeps its original value bit for bit. The official code
   at a6e89fd masks the gradient, lets SGD apply its weight decay and momentum, then resets the
   masked-out entries to their value at the start of the epoch and zeroes their momentum. With SGD
   (the official optimizer) the two are equivalent: masked-out entries stay at their original values
   with zero momentum, and the kept entries receive gradient + weight_decay * theta in both. (Before
   a6e89fd, i.e. in the code of the paper's time, only the gradient was masked, so weight decay and
   momentum did move masked-out weights.) With ``optimizer=adamw`` famr applies the decay as this L2
   term, not decoupled.

Checked against github.com/OPTML-Group/Unlearn-Saliency at commit a6e89fd
(``Classification/generate_mask.py``, ``Classification/unlearn/RL.py``, ``Classification/unlearn/impl.py``,
``Classification/arg_parser.py``, and the README's CIFAR-10 example: random 10 % forgetting, mask
0.5, lr 0.013, 10 epochs; SGD, momentum 0.9, weight decay 5e-4 and batch 256 are the defaults it
keeps). What still differs from the official code with the defaults:

- The mask keeps round(mask_ratio * N) entries (at least one; ties broken by ``topk``); the official
  code keeps int(ratio * N) entries by rank (argsort order breaks ties) and saves masks only for the
  ratios 0.1, 0.2, ..., 1.0.
- The saliency pass runs inside the method, on unshuffled D_f batches of ``batch_size``; the official
  mask is made beforehand by a separate script over a shuffled forget loader (batch 256). Both sum
  batch-mean gradients, so when 256 does not divide |D_f| the smaller last batch weighs its samples
  more (a 3,000-row class: a last batch of 184 at about 1.4 times the weight), and the two orders put
  different samples in it; the augmentation draws differ too. The masks can therefore differ in the
  entries near the cut.
- Everything random_label's docstring lists for RL: famr's own seeded random streams (labels drawn
  from (seed, step)), the experiment's augmentation, one recipe for all datasets (the official
  CIFAR-100/TinyImageNet branch redraws D_f's labels once per epoch and shuffles D_f and D_r
  together), no lr warm-up, the logged loss averaging both passes, and famr's ``precision``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from famr_cli.checks import number
from famr_cli.errors import FamrError
from famr_cli.method import METHODS, UnlearnContext, UnlearningMethod, UnlearnReport
from famr_cli.method.shared.pieces import run_autocast
from famr_cli.method.shared.relabel import random_label_batches, relabel_options
from famr_cli.method.shared.settings import TrainingSettings, training_options
from famr_cli.method.shared.training import cross_entropy, trainable_parameters
from famr_cli.train.loop import LoopHooks, run_loop
from famr_cli.train.optim import build_optimizer


def forget_gradients(
    model: nn.Module, ctx: UnlearnContext, params: list[nn.Parameter], batch_size: int, *, augment: bool = False
) -> list[torch.Tensor]:
    """Sum over D_f's batches of d CE / d theta, with the model in eval mode (SalUn's saliency).

    ``augment`` applies the training recipe's augmentation to D_f, as the official mask script does.
    """
    was_training = model.training
    model.eval()
    grads = [torch.zeros_like(p) for p in params]
    try:
        for x, y in ctx.batches(ctx.split.forget_train, batch_size, shuffle=False, augment=augment):
            with run_autocast(ctx, x.device.type):
                loss = F.cross_entropy(model(x).float(), y)
            batch_grads = torch.autograd.grad(loss, params, allow_unused=True)
            present = [(acc, g) for acc, g in zip(grads, batch_grads) if g is not None]
            if present:
                torch._foreach_add_([a for a, _ in present], [g for _, g in present])
    finally:
        model.train(was_training)
    return grads


def saliency_mask(grads: list[torch.Tensor], ratio: float) -> list[torch.Tensor]:
    """Float masks (1 = may move) keeping exactly round(ratio * N) entries of largest |grad| over all tensors."""
    flat = torch.cat([g.detach().abs().flatten() for g in grads])
    keep = max(1, min(flat.numel(), round(ratio * flat.numel())))
    mask = torch.zeros_like(flat)
    # topk (not a >= threshold test) so ties, e.g. the many exact zeros of unused weights, cannot
    # push the kept count above the requested fraction.
    mask[torch.topk(flat, keep, sorted=False).indices] = 1.0
    return [m.view_as(g) for m, g in zip(mask.split([g.numel() for g in grads]), grads)]


@dataclass(frozen=True)
class SalUnSettings(TrainingSettings):
    mask_ratio: float
    augment: bool
    relabel: str
    passes: str

    @classmethod
    def parse(cls, c: dict[str, Any]) -> SalUnSettings:
        if not 0 < (mask_ratio := number(c["mask_ratio"], "method.mask_ratio", 0.5)) <= 1:
            raise FamrError(f"method.mask_ratio must be in (0, 1] (got {c['mask_ratio']}); try method.mask_ratio=0.5.")
        return cls(mask_ratio=mask_ratio, **training_options(c, suggested_lr=0.013), **relabel_options(c))


@METHODS.register("salun")
class SalUn(UnlearningMethod[SalUnSettings]):
    def unlearn(self, model: nn.Module, ctx: UnlearnContext) -> UnlearnReport:
        s = self.settings
        params = trainable_parameters(model)
        masks = saliency_mask(forget_gradients(model, ctx, params, s.batch_size, augment=s.augment), s.mask_ratio)
        kept = float(sum(float(m.sum()) for m in masks) / sum(m.numel() for m in masks))

        batches = random_label_batches(ctx, relabel=s.relabel, passes=s.passes, batch_size=s.batch_size, augment=s.augment, method="salun")
        wd = s.weight_decay
        # Decay goes through the masked gradient instead of the optimizer: the optimizer's own decay
        # would shrink weights outside the mask, which SalUn keeps fixed (the official code resets
        # them after each step instead, which is equivalent for SGD: see the module docstring).
        optimizer = build_optimizer(params, s.optimizer, s.lr, key="method", momentum=s.momentum, weight_decay=0.0)

        def mask_grads() -> None:
            live = [(p, m) for p, m in zip(params, masks) if p.grad is not None]
            grads = [p.grad for p, _ in live]
            if wd:
                torch._foreach_add_(grads, [p.detach() for p, _ in live], alpha=wd)
            torch._foreach_mul_(grads, [m for _, m in live])

        def on_epoch_end(epoch: int, mean_loss: float) -> None:
            ctx.log_metrics({"unlearn/epoch": epoch + 1, "unlearn/rl_loss": mean_loss})

        result = run_loop(
            model,
            batches,
            cross_entropy,
            optimizer,
            epochs=s.epochs,
            hooks=LoopHooks(after_backward=mask_grads, on_epoch_end=on_epoch_end),
            desc="SalUn",
            show_progress=ctx.show_progress,
            divergence_hint="lower method.lr",
            autocast=ctx.autocast,
        )
        return UnlearnReport(epoch_losses=result.epoch_losses, certificate={"mask_kept_fraction": kept, "steps": result.steps})
