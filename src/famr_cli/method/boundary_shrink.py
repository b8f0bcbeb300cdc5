"""Boundary Shrink: relabel each forget sample with the class its adversarial neighbour falls into, then fine-tune on D_f.

Chen, Gao, Liu, Peng & Wang, "Boundary Unlearning: Rapid Forgetting of Deep Networks via Shifting the
Decision Boundary", CVPR 2023. Official code: the authors' Dropbox archive ``Boundary-Unlearning-Code.zip``
(linked from their README), checked in its GitHub copies TY-LEE-KR/Boundary-Unlearning-Code at commit
86c2f1f and shreyasudaya/Boundary-Unlearning at 6f3ec1a (identical ``boundary_unlearning.py``):
``boundary_shrink`` in ``boundary_unlearning.py``, ``FGSM`` / ``LinfPGD`` in ``adv_generator.py``, the
CIFAR-10 loaders in ``utils.py`` and the arguments of ``main.py``.

For every batch of D_f, a frozen copy of the original model (eval mode, never updated) is attacked:
an untargeted step up the sign of the input gradient of CE(original(x), y), bounded by ``bound`` in
the L-inf norm (the "neighbour search"). The class the original predicts for the perturbed image is
the sample's nearest wrong class (or its own class when the step did not cross a boundary, which the
official code keeps as the label too). The model being unlearned, in train mode, takes one step of
cross-entropy towards those labels on the clean batch. Only D_f is read, and the method is defined
for class forgetting only (the paper's setting).

Defaults are the official CIFAR-10 recipe: FGSM (one signed-gradient step of size ``bound``; the PGD
call is commented out) with bound 0.1 and no random start; SGD lr 1e-5, momentum 0.9, no weight
decay, constant lr; 10 epochs over D_f in shuffled batches of 64 (``main.py``'s batch size; D_f is
the whole class, 5000 images); no augmentation (their CIFAR-10 transform is ToTensor + Normalize);
BatchNorm in train mode (``unlearn_model.train()``); the adversarial labels recomputed for every batch.
``attack: pgd`` runs their ``LinfPGD`` untargeted branch instead (``pgd_iters`` steps of ``pgd_step``,
each projected back into the ``bound`` ball; their defaults 5 steps of 8/255), and ``random_start``
their uniform start in the ball (off in both of their attacks); both draw from generators seeded by
the run's seed and the step.

What still differs from the official code with the defaults:

- The pixel space of the attack. Their attack un-normalises with fixed CIFAR constants, mean
  (0.4914, 0.4822, 0.2265) (the last a typo of 0.4465) and std (0.2023, 0.1994, 0.2010), while their
  CIFAR-10 data are normalised with mean 0.5 and std 0.5. So a step of ``bound`` = 0.1 in their units
  moves a real pixel by about 0.1 * 0.5 / 0.2 = 0.25, their clamp to [0, 1] binds only on blue values
  below about 0.19, and their rounding to 1/255 happens in those units (about 2.5/255 of a real pixel).
  famr un-normalises with the experiment's own mean and std: ``bound`` is in real [0, 1] pixel units,
  and the perturbed image is clamped to [0, 1] and rounded to whole 1/255 steps (the official intent).
  ``bound: 0.25`` comes close to their effective step on CIFAR-10. Float images given through
  ``famr_cli.api`` have no known pixel range: they are neither clamped nor rounded, and ``bound`` is in
  their own units.
- Their model is the All-CNN of ``models.py`` (half width); famr unlearns the experiment's backbone.
- Random streams: famr shuffles D_f from its own seeded generator, not a SubsetRandomSampler.
- Their "enhanced" variants (``extra_exp``: curvature regularisation, re-weighting) are not offered.
- Forward passes follow famr's ``precision`` (bf16 autocast on CUDA by default; theirs run fp32).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from famr_cli.checks import flag, number, whole
from famr_cli.errors import FamrError
from famr_cli.method import METHODS, UnlearnContext, UnlearningMethod, UnlearnReport
from famr_cli.method.shared.pieces import frozen_copy, mixed_seed
from famr_cli.method.shared.settings import ScheduledSettings, bn_option, training_options
from famr_cli.method.shared.training import train_with_ce

ATTACKS = ("fgsm", "pgd")
# Purpose tag mixed into the run's seed for the attack's random starts.
_START_STREAM = 0x4253_5254  # "BSRT"


@dataclass(frozen=True)
class PixelBox:
    """Maps model inputs to pixel values and back, and keeps perturbed pixels valid.

    ``valid`` is true when the stored images are uint8, i.e. their pixels live in [0, 1] in steps of 1/255.
    """

    mean: torch.Tensor  # (1, C, 1, 1)
    std: torch.Tensor
    valid: bool

    @classmethod
    def of(cls, ctx: UnlearnContext) -> PixelBox:
        def view(values: tuple[float, ...]) -> torch.Tensor:
            return torch.tensor(values, device=ctx.device, dtype=torch.float32).view(1, -1, 1, 1)

        return cls(view(ctx.data.mean), view(ctx.data.std), not ctx.data.x_train.is_floating_point())

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean

    def to_inputs(self, p: torch.Tensor) -> torch.Tensor:
        return (p - self.mean) / self.std

    def project(self, p: torch.Tensor, natural: torch.Tensor, bound: float) -> torch.Tensor:
        """``p`` pulled into the L-inf ``bound`` ball around ``natural``, then clamped and rounded to valid pixels."""
        p = natural + (p - natural).clamp(-bound, bound)
        if self.valid:
            p = p.clamp(0.0, 1.0).mul(255.0).round().div(255.0)
        return p


@dataclass(frozen=True)
class Attack:
    """The neighbour search: ``iters`` signed-gradient steps of ``step`` within the ``bound`` ball (FGSM: one step of ``bound``)."""

    bound: float
    step: float
    iters: int
    random_start: bool

    def perturb(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, box: PixelBox, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Adversarial model inputs for the batch ``x`` with true labels ``y``: CE(model(x), y) ascended, untargeted."""
        natural = box.to_pixels(x.detach().float())
        p = natural
        if self.random_start:
            # Drawn on the CPU so a seed gives the same start on any device.
            noise = torch.rand(natural.shape, generator=generator).mul_(2 * self.bound).sub_(self.bound)
            p = box.project(natural + noise.to(natural.device), natural, self.bound)
        for _ in range(self.iters):
            inputs = box.to_inputs(p).requires_grad_(True)
            with torch.enable_grad():
                loss = F.cross_entropy(model(inputs).float(), y)
                (grad,) = torch.autograd.grad(loss, inputs)
            # The sign of the input gradient equals the pixel gradient's: the std is positive.
            p = box.project(p + self.step * grad.sign(), natural, self.bound)
        return box.to_inputs(p).detach()


def nearest_labels(original: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Attack, box: PixelBox, generator=None) -> torch.Tensor:
    """The original model's predictions on the adversarial neighbours of ``x``: each sample's new label."""
    x_adv = attack.perturb(original, x, y, box, generator)
    with torch.no_grad():
        return original(x_adv).argmax(dim=1)


@dataclass(frozen=True)
class BoundaryShrinkSettings(ScheduledSettings):
    augment: bool
    bn: str
    attack: str
    bound: float
    pgd_step: float
    pgd_iters: int
    random_start: bool

    @classmethod
    def parse(cls, c: dict[str, Any]) -> BoundaryShrinkSettings:
        shared = training_options(c, suggested_lr=1e-5)
        bn = bn_option(c["bn"])
        if c["attack"] not in ATTACKS:
            raise FamrError(
                f"method.attack must be 'fgsm' (one signed-gradient step of size bound) or 'pgd' (pgd_iters steps of pgd_step "
                f"inside the bound) (got '{c['attack']}'); use method.attack=fgsm."
            )
        bound = number(c["bound"], "method.bound", 0.1, positive=True)
        pgd_step = number(c["pgd_step"], "method.pgd_step", 0.03137, positive=True)
        pgd_iters = whole(c["pgd_iters"], "method.pgd_iters", 5, minimum=1)
        random_start = flag(c["random_start"], "method.random_start")
        return cls(**shared, bn=bn, attack=str(c["attack"]), bound=bound, pgd_step=pgd_step, pgd_iters=pgd_iters, random_start=random_start)

    def neighbour_search(self) -> Attack:
        if self.attack == "fgsm":
            return Attack(self.bound, self.bound, 1, self.random_start)
        return Attack(self.bound, self.pgd_step, self.pgd_iters, self.random_start)


@METHODS.register("boundary_shrink")
class BoundaryShrink(UnlearningMethod[BoundaryShrinkSettings]):
    forget_specs = ("class",)

    @property
    def data_read(self) -> str:
        return "forget"

    def unlearn(self, model: nn.Module, ctx: UnlearnContext) -> UnlearnReport:
        s = self.settings
        forget = ctx.split.forget_train
        original = frozen_copy(model)  # the attacked model: the original, never updated
        attack, box = s.neighbour_search(), PixelBox.of(ctx)
        crossed = torch.zeros((), device=ctx.device)
        step = 0

        def objective(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            nonlocal crossed, step
            generator = torch.Generator().manual_seed(mixed_seed(ctx.seed, _START_STREAM, step)) if attack.random_start else None
            step += 1
            labels = nearest_labels(original, x, y, attack, box, generator)
            crossed = crossed + (labels != y).sum()
            return F.cross_entropy(m(x).float(), labels)

        result = train_with_ce(
            model,
            ctx,
            s,
            forget,
            augment=s.augment,
            bn=s.bn,
            desc="boundary_shrink",
            objective=objective,
            divergence_hint="lower method.lr",
        )
        visits = max(s.epochs * len(forget), 1)
        return UnlearnReport(
            epoch_losses=result.epoch_losses,
            # The share of forget-sample visits whose neighbour crossed a boundary (their "attack success ratio").
            certificate={"steps": result.steps, "forget_samples": len(forget), "attack_success": float(crossed) / visits},
        )
