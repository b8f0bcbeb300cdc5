"""UNSIR: learn error-maximising noise for the forgotten classes, impair the model with it, then repair it.

Tarun, Chundawat, Mandal & Kankanhalli, "Fast Yet Effective Machine Unlearning", IEEE TNNLS 2023.
Official code: github.com/vikram2000b/Fast-Machine-Unlearning, ``Machine Unlearning.ipynb`` at commit
fc217ce (the repository's only code; it defines class forgetting alone, so famr offers no sample
variant either). The same authors ship a second UNSIR beside Bad Teacher
(github.com/vikram2000b/bad-teaching-unlearning at f1aa988, ``UNSIR_noise_train`` and
``UNSIR_create_noisy_loader`` in ``unlearn.py``): it keeps the same first-C-images loop and labels the
noise with the forgotten class, as famr does, but its values (250 noise steps, 80 copies, 500 retained
images per class, impair and repair with Adam 1e-4, a 20-superclass CIFAR-100 model at 224 px) are
not the CIFAR-10 recipe famr follows.

1. Noise: for each forgotten class c, a tensor of ``noise_samples`` model inputs, drawn standard
   normal (in the normalised input space) and then optimised with Adam (``noise_lr``) for
   ``noise_steps`` full-tensor steps to maximise the model's cross-entropy towards c, kept small by an
   L2 term: minimise -CE(f(noise), c) + ``noise_l2`` * mean_i ||noise_i||^2. Only the noise moves.
2. Impair: one set of the noise (each class's noise images repeated ``noise_copies`` times, labelled
   c; which of them, ``noise_rows`` says) and a retained subset (the first ``retain_per_class``
   training rows of every retained class), shuffled together; ``epochs`` passes with ``lr``, a fresh
   optimizer.
3. Repair: ``repair_epochs`` passes over the retained subset alone with ``repair_lr``, another fresh
   optimizer.

The model is in train mode in both training phases (BatchNorm statistics update), with no augmentation.
Reads D_f's classes and a subset of D_r; defined for class forgetting only.

Defaults are the notebook's CIFAR-10 recipe: 256 noise images per class, Adam lr 0.1 for 5 x 8 = 40
steps, L2 weight 0.1, learnt with the model in train mode (the notebook's freshly loaded model is never
put in eval mode, so BatchNorm normalises with the noise batch's statistics and its running statistics
drift towards the noise: ``noise_bn: train``; ``eval`` uses the model's running statistics and leaves
the model untouched); the noise repeated 20 times (``num_batches``), 1000 retained images per class
(``num_samples_per_class``); impair with Adam lr 0.02, repair with Adam lr 0.01, one epoch each, batches
of 256, no weight decay. Of each class's 256 learnt images the notebook's impair set holds only the
first 3, each 20 times (60 rows beside 9000 retained ones on one CIFAR-10 class): its loop over a noise
batch runs ``range(batch[0].size(0))``, the channel count of one image, not the batch size. famr keeps
that (``noise_rows: channels``, the first C images, C the images' channels); ``noise_rows: all`` puts
every learnt image in, as the loop evidently meant (20 x 256 = 5120 rows per class).

What still differs from the official code with the defaults:

- Noise labels: the notebook's impair step labels every noise image 0 (its ``class_num`` is never set
  to the class), which is the noise's own class only when class 0 is forgotten; famr labels each
  class's noise with that class, the class it was learnt for.
- The retained subset is the first ``retain_per_class`` rows of each class in famr's training-set order;
  the notebook's are the first in ImageFolder's file order. A class with fewer rows in D_r gives all of
  them.
- Their model is torchvision's ResNet-18 (ImageNet stem on 32 px images); famr unlearns the
  experiment's backbone.
- Random streams: the noise's initial draw, the impair set's order and the repair order come from
  famr's generators seeded by the run's seed, not torch's global generator and DataLoader shuffles.
- The notebook's noise steps also accumulate gradients in the model's weights (cleared before the
  impair step's first update, so without effect); famr differentiates with respect to the noise only.
- Forward passes follow famr's ``precision`` (bf16 autocast on CUDA by default; theirs run fp32).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from famr_cli.checks import number, whole
from famr_cli.errors import FamrError
from famr_cli.method import METHODS, UnlearnContext, UnlearningMethod, UnlearnReport
from famr_cli.method.shared.pieces import mixed_seed, run_autocast
from famr_cli.method.shared.settings import ScheduledSettings, training_options
from famr_cli.method.shared.training import train_on_batches, train_with_ce

NOISE_BN_MODES = ("train", "eval")
# Which learnt noise images enter the impair set: the first C (the notebook's loop) or all of them.
NOISE_ROWS = ("channels", "all")
# Purpose tags mixed into the run's seed, so each random stream below is independent of the others.
_NOISE_STREAM = 0x4E4F_4953  # the noise's initial draw (one per class)
_IMPAIR_STREAM = 0x494D_5052  # the order of the impair set (one per epoch)
_REPAIR_STREAM = 0x5245_5052  # the order of the repair passes


@dataclass(frozen=True)
class UNSIRSettings(ScheduledSettings):
    """``lr``/``epochs``: the impair phase; the repair phase and the noise have their own keys."""

    repair_lr: float
    repair_epochs: int
    retain_per_class: int
    noise_samples: int
    noise_copies: int
    noise_rows: str
    noise_steps: int
    noise_lr: float
    noise_l2: float
    noise_bn: str

    @classmethod
    def parse(cls, c: dict[str, Any]) -> UNSIRSettings:
        shared = training_options(c, suggested_lr=0.02)
        values = dict(
            repair_lr=number(c["repair_lr"], "method.repair_lr", 0.01, positive=True),
            repair_epochs=whole(c["repair_epochs"], "method.repair_epochs", 1, minimum=0),
            retain_per_class=whole(c["retain_per_class"], "method.retain_per_class", 1000, minimum=1),
            noise_samples=whole(c["noise_samples"], "method.noise_samples", 256, minimum=1),
            noise_copies=whole(c["noise_copies"], "method.noise_copies", 20, minimum=1),
            noise_steps=whole(c["noise_steps"], "method.noise_steps", 40, minimum=0),
            noise_lr=number(c["noise_lr"], "method.noise_lr", 0.1, positive=True),
            noise_l2=number(c["noise_l2"], "method.noise_l2", 0.1, minimum=0),
        )
        if c["noise_rows"] not in NOISE_ROWS:
            raise FamrError(
                f"method.noise_rows must be 'channels' (the first C learnt noise images, C the images' channels, official) or 'all' "
                f"(every learnt noise image) (got '{c['noise_rows']}'); use method.noise_rows=channels."
            )
        if c["noise_bn"] not in NOISE_BN_MODES:
            raise FamrError(
                f"method.noise_bn must be 'train' (BatchNorm on the noise batch's statistics, official) or 'eval' "
                f"(the model's running statistics) (got '{c['noise_bn']}'); use method.noise_bn=train."
            )
        return cls(**shared, **values, noise_rows=str(c["noise_rows"]), noise_bn=str(c["noise_bn"]))


def retained_subset(y_train: torch.Tensor, retain: torch.Tensor, forgotten: list[int], per_class: int) -> torch.Tensor:
    """The first ``per_class`` rows of ``retain`` (in training-set order) of every class not in ``forgotten``, class by class."""
    rows = retain.cpu().sort().values
    labels = y_train.cpu()[rows]
    kept = [rows[labels == c][:per_class] for c in labels.unique().tolist() if c not in forgotten]
    return torch.cat(kept) if kept else rows[:0]


def learn_noise(
    model: nn.Module, cls: int, shape: tuple[int, ...], s: UNSIRSettings, ctx: UnlearnContext
) -> tuple[torch.Tensor, list[float]]:
    """Error-maximising noise for class ``cls`` and the model's CE on it at the first and the last step.

    Adam on the noise alone minimises -CE(model(noise), cls) + noise_l2 * mean_i ||noise_i||^2; the model
    is in train or eval mode as ``noise_bn`` says, and its weights get no gradient.
    """
    generator = torch.Generator().manual_seed(mixed_seed(ctx.seed, _NOISE_STREAM, cls))
    noise = torch.randn(shape, generator=generator).to(ctx.device).requires_grad_(True)
    optimizer = torch.optim.Adam([noise], lr=s.noise_lr)
    labels = torch.full((shape[0],), cls, dtype=torch.long, device=ctx.device)
    model.train(s.noise_bn == "train")
    ce: list[torch.Tensor] = []
    for _ in range(s.noise_steps):
        with run_autocast(ctx, ctx.device.type):
            logits = model(noise)
        forget_ce = F.cross_entropy(logits.float(), labels)
        loss = -forget_ce + s.noise_l2 * noise.square().sum(dim=(1, 2, 3)).mean()
        (noise.grad,) = torch.autograd.grad(loss, [noise])
        optimizer.step()
        ce.append(forget_ce.detach())
    figures = [float(ce[0]), float(ce[-1])] if ce else []
    return noise.detach(), figures


class ImpairBatches:
    """The impair set: every noise row ``copies`` times and the retained ``rows``, shuffled together each epoch.

    Re-iterable (one iteration = one epoch), seeded by (seed, epoch). Retained rows are read through
    ``ctx.batches``, so they are normalised (and centre-cropped) exactly as every other method's.
    """

    def __init__(
        self, noise: torch.Tensor, noise_labels: torch.Tensor, copies: int, rows: torch.Tensor, ctx: UnlearnContext, batch_size: int
    ):
        self.noise, self.noise_labels, self.copies = noise, noise_labels, copies
        self.rows, self.ctx, self.batch_size = rows, ctx, batch_size
        self.epoch = 0

    @property
    def num_noise(self) -> int:
        return len(self.noise) * self.copies

    def __len__(self) -> int:
        return (self.num_noise + len(self.rows) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(mixed_seed(self.ctx.seed, _IMPAIR_STREAM, self.epoch))
        self.epoch += 1
        order = torch.randperm(self.num_noise + len(self.rows), generator=generator)
        for start in range(0, len(order), self.batch_size):
            chosen = order[start : start + self.batch_size]
            # Positions below num_noise are noise rows (copy k of row i sits at k * len(noise) + i), the rest retained rows.
            noise_rows = (chosen[chosen < self.num_noise] % len(self.noise)).to(self.noise.device)
            parts = [(self.noise[noise_rows], self.noise_labels[noise_rows])]
            retained = self.rows[chosen[chosen >= self.num_noise] - self.num_noise]
            if len(retained):
                parts.append(next(iter(self.ctx.batches(retained, len(retained), shuffle=False))))
            yield torch.cat([x for x, _ in parts]), torch.cat([y.to(self.noise.device, torch.long) for _, y in parts])


@METHODS.register("unsir")
class UNSIR(UnlearningMethod[UNSIRSettings]):
    forget_specs = ("class",)

    @property
    def data_read(self) -> str:
        return "forget+retain"

    def unlearn(self, model: nn.Module, ctx: UnlearnContext) -> UnlearnReport:
        s, classes = self.settings, list(ctx.split.forgotten_classes)
        if not classes:
            raise FamrError("method=unsir learns noise for the forgotten classes, and this forget set has none; use forget=class.")
        rows = retained_subset(ctx.data.y_train, ctx.split.retain_train, classes, s.retain_per_class)
        shape = (s.noise_samples, ctx.data.in_chans, ctx.data.img_size, ctx.data.img_size)
        used = ctx.data.in_chans if s.noise_rows == "channels" else s.noise_samples
        noises, noise_ce = [], {}
        for cls in classes:
            noise, noise_ce[str(cls)] = learn_noise(model, cls, shape, s, ctx)
            noises.append(noise[:used])
        noise_labels = torch.cat([torch.full((len(n),), cls, dtype=torch.long, device=ctx.device) for n, cls in zip(noises, classes)])
        impair_batches = ImpairBatches(torch.cat(noises), noise_labels, s.noise_copies, rows, ctx, s.batch_size)
        impair = train_on_batches(model, ctx, s, impair_batches, bn="train", desc="UNSIR impair", divergence_hint="lower method.lr")
        losses, steps = list(impair.epoch_losses), impair.steps
        if s.repair_epochs > 0:
            repair_ctx = replace(ctx, seed=mixed_seed(ctx.seed, _REPAIR_STREAM))
            repair_settings = replace(s, lr=s.repair_lr, epochs=s.repair_epochs)
            repair = train_with_ce(
                model,
                repair_ctx,
                repair_settings,
                rows,
                augment=False,
                bn="train",
                desc="UNSIR repair",
                divergence_hint="lower method.repair_lr",
            )
            losses, steps = losses + repair.epoch_losses, steps + repair.steps
        return UnlearnReport(
            epoch_losses=losses,
            certificate={
                "steps": steps,
                "retain_subset": len(rows),
                "noise_impair_rows": len(impair_batches.noise) * s.noise_copies,
                # The model's CE towards each class on its noise at the first and the last noise step: the noise raises it.
                "noise_forget_ce": noise_ce,
            },
        )
