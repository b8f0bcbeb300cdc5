"""Bad Teacher: distil from the original on retained rows and from a random network on forget rows.

Chundawat, Tarun, Mandal & Kankanhalli, "Can Bad Teaching Induce Forgetting? Unlearning in Deep
Networks using an Incompetent Teacher", AAAI 2023. Official code: github.com/vikram2000b/bad-teaching-unlearning
at commit f1aa988 (``UnlearnerLoss``, ``unlearning_step`` and ``blindspot_unlearner`` in ``unlearn.py``,
``UnLearningData`` in ``dataset.py``, the run in ``CIFARSuper20_Rocket_Unlearn.ipynb``); Deep Unlearn's
port (github.com/xcadet/deepunlearn at 6830ff6, ``munl/unlearning/bad_teacher.py``) was read too.

The student is the model being unlearned (a copy of the original, in train mode: its BatchNorm
statistics update). The competent teacher is a frozen copy of the original, the incompetent teacher
a randomly initialised network of the same architecture, both in eval mode. The data is D_f together
with a random ``retain_fraction`` of D_r, shuffled into one set; each row's target is the competent
teacher's softmax(logits / T) when the row is retained and the incompetent teacher's when it is
forgotten, and the loss is ``F.kl_div(log_softmax(student / T), target)`` with PyTorch's default
reduction, the mean over every (row, class) element, as in their ``UnlearnerLoss`` (no T^2 factor).

Defaults are the notebook's run: Adam, lr 1e-4, no weight decay, 1 epoch, batch 256, T = 1, 30 % of
D_r (``random.sample(retain_train, int(0.3 * len(retain_train)))``), no augmentation.

The incompetent teacher: the method sees the trained model, not the backbone's config, so it cannot
build the architecture afresh as their notebook does (``ResNet18(pretrained=False)``). famr deep-copies
the model and re-initialises it: every module with a ``reset_parameters()`` (convolutions, linear
layers, normalisation layers, whose running statistics reset too) calls it, and each parameter whose
own module has none (a ViT's ``cls_token`` and ``pos_embed``) is redrawn from N(0, 0.02^2). Both draws come
from the run's seed on the CPU, so the teacher is the same on every device and rerun.

What still differs from their code:

- The incompetent teacher has PyTorch's default initialisation (convolutions kaiming_uniform with
  a = sqrt(5); plus the N(0, 0.02^2) above). Theirs is torchvision's ``resnet18``: convolutions
  kaiming_normal (fan-out, ReLU gain), BatchNorm weights 1 and biases 0, a default-initialised linear
  head; so its convolution weights have another scale. Like theirs it is a network no data has touched.
- Their ``ResNet18`` wrapper applies ``nn.Dropout()`` (p = 0.5) to the features before the head, active
  in the student's every distillation forward (train mode); famr's backbones have no dropout there.
- The retain subset and the batch order come from famr's seeded generators (theirs from Python's and
  DataLoader's global ones), and forward passes follow famr's ``precision`` (bf16 autocast on CUDA by
  default; theirs run fp32).
- Their notebook forgets CIFAR-100 class 69 (rocket) from a 20-superclass ResNet-18 pretrained on
  ImageNet and fine-tuned at 224 px; famr uses these values for every dataset and forget set.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from famr_cli.checks import number
from famr_cli.errors import FamrError
from famr_cli.method import METHODS, UnlearnContext, UnlearningMethod, UnlearnReport
from famr_cli.method.shared.pieces import frozen_copy, mixed_seed
from famr_cli.method.shared.settings import ScheduledSettings, training_options
from famr_cli.method.shared.training import train_on_batches
from famr_cli.train.loop import Objective

# Purpose tags mixed into the run's seed, so the teacher's weights and the subset are independent draws.
_TEACHER_STREAM = 0x4241_4454  # the incompetent teacher's initialisation
_SUBSET_STREAM = 0x5355_4253  # the retained rows distilled
# Std of the draw for parameters that no module re-initialises (timm's own for position embeddings).
LEFTOVER_STD = 0.02


@dataclass(frozen=True)
class BadTeacherSettings(ScheduledSettings):
    temperature: float
    retain_fraction: float
    augment: bool

    @classmethod
    def parse(cls, c: dict[str, Any]) -> BadTeacherSettings:
        shared = training_options(c, suggested_lr=1e-4)
        temperature = number(c["temperature"], "method.temperature", 1, positive=True)
        if not 0 < (fraction := number(c["retain_fraction"], "method.retain_fraction", 0.3)) <= 1:
            raise FamrError(
                f"method.retain_fraction must be in (0, 1], the share of D_r distilled from the original (got {c['retain_fraction']}); "
                "try method.retain_fraction=0.3."
            )
        return cls(**shared, temperature=temperature, retain_fraction=fraction)


def incompetent_teacher(model: nn.Module, seed: int) -> nn.Module:
    """A frozen copy of ``model``'s architecture with fresh random weights drawn from ``seed`` (module docstring)."""
    device = next(model.parameters()).device
    teacher = copy.deepcopy(model).cpu()
    reset: set[int] = set()
    # The global CPU generator drives reset_parameters(); forking it and seeding it alone (torch.manual_seed
    # would reseed every CUDA generator too) leaves the caller's streams untouched.
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.default_generator.manual_seed(mixed_seed(seed, _TEACHER_STREAM))
        for module in teacher.modules():
            if callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
                reset.update(id(p) for p in module.parameters(recurse=False))
        for p in teacher.parameters():
            if id(p) not in reset:
                p.normal_(0.0, LEFTOVER_STD)
    teacher.requires_grad_(False)
    return teacher.to(device).eval()


def retain_subset(retain: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """``int(fraction * len(retain))`` rows of ``retain`` drawn without replacement from ``seed``."""
    generator = torch.Generator().manual_seed(mixed_seed(seed, _SUBSET_STREAM))
    order = torch.randperm(len(retain), generator=generator)
    return retain.cpu()[order[: int(fraction * len(retain))]]


def teacher_targets(competent: torch.Tensor, incompetent: torch.Tensor, is_forget: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per row: softmax(incompetent / T) where ``is_forget`` is 1, softmax(competent / T) where it is 0."""
    good = F.softmax(competent.float() / temperature, dim=1)
    bad = F.softmax(incompetent.float() / temperature, dim=1)
    return torch.where(is_forget.bool().unsqueeze(1), bad, good)


def bad_teacher_loss(
    student: torch.Tensor, competent: torch.Tensor, incompetent: torch.Tensor, is_forget: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(target || softmax(student / T)) averaged over every (row, class) element, their ``UnlearnerLoss``."""
    log_student = F.log_softmax(student.float() / temperature, dim=1)
    target = teacher_targets(competent, incompetent, is_forget, temperature)
    # F.kl_div's reduction="mean", written out: torch warns that it will come to mean "batchmean".
    return (torch.special.xlogy(target, target) - target * log_student).sum() / target.numel()


def bad_teacher_objective(competent: nn.Module, incompetent: nn.Module, temperature: float) -> Objective:
    """The loop's objective; the batch's "labels" are the rows' forget flags (1 = forgotten)."""

    def objective(student: nn.Module, x: torch.Tensor, is_forget: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            good, bad = competent(x), incompetent(x)
        return bad_teacher_loss(student(x), good, bad, is_forget, temperature)

    return objective


@METHODS.register("bad_teacher")
class BadTeacher(UnlearningMethod[BadTeacherSettings]):
    @property
    def data_read(self) -> str:
        return "forget+retain"

    def unlearn(self, model: nn.Module, ctx: UnlearnContext) -> UnlearnReport:
        s = self.settings
        competent = frozen_copy(model)
        incompetent = incompetent_teacher(model, ctx.seed)
        forget = ctx.split.forget_train.cpu()
        retained = retain_subset(ctx.split.retain_train, s.retain_fraction, ctx.seed)
        flags = torch.zeros(len(ctx.data.y_train), dtype=torch.long)
        flags[forget] = 1
        batches = ctx.batches(torch.cat([forget, retained]), s.batch_size, augment=s.augment, labels=flags)
        result = train_on_batches(
            model,
            ctx,
            s,
            batches,
            bn="train",  # the student trains as a fresh module does in their notebook
            desc="bad_teacher",
            objective=bad_teacher_objective(competent, incompetent, s.temperature),
            divergence_hint="lower method.lr",
        )
        return UnlearnReport(
            epoch_losses=result.epoch_losses,
            certificate={"steps": result.steps, "forget_samples": len(forget), "retain_samples": len(retained)},
        )
