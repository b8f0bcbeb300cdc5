"""SCRUB: a student moves away from its frozen teacher on D_f and stays close to it on D_r.

Kurmanji, Triantafillou, Hayes & Triantafillou, "Towards Unbounded Machine Unlearning", NeurIPS 2023.

The teacher is a frozen copy of the original model; the student is the model being unlearned.
Each epoch e runs, when e < ``max_steps``, one "max-step" pass over D_f that maximises
KL(teacher || student) (trained as minimising its negative), then one "min-step" pass over D_r
minimising alpha * KL(teacher || student) + gamma * CE. The KL is the temperature-T distillation
loss of the authors' code (DistillKL): KL(softmax(t/T) || softmax(s/T)) * T^2.

Checked against the official code, github.com/meghdadk/SCRUB (``thirdparty/repdistiller/helper/loops.py``
``train_distill``, ``thirdparty/repdistiller/distiller_zoo/KD.py``, ``large_scale_unlearning.ipynb``):
same losses, weights, shared optimizer, student in train and teacher in eval mode. Their CIFAR-10 class
recipe runs 2 max-step and 3 min-step passes without augmentation at SGD lr 5e-4; at the start the
student equals the teacher, so the max-step's gradient is near zero and a small lr escapes slowly:
lr and max_steps are famr-tune's search space for SCRUB.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from famr_cli.checks import number, whole
from famr_cli.errors import FamrError
from famr_cli.method import METHODS, UnlearnContext, UnlearningMethod, UnlearnReport
from famr_cli.method.shared import TrainingSettings, method_optimizer, trainable_parameters, training_options
from famr_cli.train.loop import Objective, run_loop


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Batch-mean KL(softmax(teacher/T) || softmax(student/T)), times T^2 to keep gradient scale T-free."""
    log_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_t = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * temperature**2


def frozen_teacher(model: nn.Module) -> nn.Module:
    teacher = copy.deepcopy(model).eval()
    teacher.requires_grad_(False)
    return teacher


def max_step_objective(teacher: nn.Module, temperature: float) -> Objective:
    """-KL(teacher || student) on D_f: minimising it pushes the student away from the teacher."""

    def objective(student: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher(x)
        return -distill_kl(student(x), teacher_logits, temperature)

    return objective


def min_step_objective(teacher: nn.Module, temperature: float, alpha: float, gamma: float) -> Objective:
    """alpha * KL(teacher || student) + gamma * CE on D_r: keep what the teacher knows about D_r."""

    def objective(student: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher(x)
        logits = student(x)
        return alpha * distill_kl(logits, teacher_logits, temperature) + gamma * F.cross_entropy(logits.float(), y)

    return objective


@dataclass(frozen=True)
class SCRUBSettings(TrainingSettings):
    alpha: float
    gamma: float
    temperature: float
    max_steps: int
    forget_batch_size: int
    augment: bool

    @classmethod
    def parse(cls, c: dict[str, Any]) -> SCRUBSettings:
        shared = training_options(c, suggested_lr=5e-4)
        if (max_steps := whole(c["max_steps"], "method.max_steps", 2)) < 0:
            raise FamrError(f"method.max_steps must be >= 0 (got {c['max_steps']}); it counts the epochs that include a pass over D_f.")
        if (alpha := number(c["alpha"], "method.alpha", 0.001)) < 0:
            raise FamrError(f"method.alpha must be >= 0 (got {c['alpha']}); try method.alpha=0.001.")
        if (gamma := number(c["gamma"], "method.gamma", 0.99)) < 0:
            raise FamrError(f"method.gamma must be >= 0 (got {c['gamma']}); try method.gamma=0.99.")
        if alpha + gamma == 0:
            raise FamrError(
                "method.alpha and method.gamma are both 0, which leaves the pass over D_r nothing to keep; try method.gamma=0.99."
            )
        if (temperature := number(c["temperature"], "method.temperature", 4)) <= 0:
            raise FamrError(f"method.temperature must be positive (got {c['temperature']}); try method.temperature=4.")
        forget_batch_size = whole(c["forget_batch_size"], "method.forget_batch_size", 256, minimum=1)
        return cls(**shared, alpha=alpha, gamma=gamma, temperature=temperature, max_steps=max_steps, forget_batch_size=forget_batch_size)


@METHODS.register("scrub")
class SCRUB(UnlearningMethod[SCRUBSettings]):
    def unlearn(self, model: nn.Module, ctx: UnlearnContext) -> UnlearnReport:
        s = self.settings
        teacher = frozen_teacher(model)
        forget_batches = ctx.batches(ctx.split.forget_train, s.forget_batch_size, augment=s.augment)
        retain_batches = ctx.batches(ctx.split.retain_train, s.batch_size, augment=s.augment)
        # One optimizer for both passes, as in the authors' code: momentum carries across them.
        optimizer = method_optimizer(trainable_parameters(model), s)
        forget_objective = max_step_objective(teacher, s.temperature)
        retain_objective = min_step_objective(teacher, s.temperature, s.alpha, s.gamma)
        forget_kl: list[float] = []
        retain_losses: list[float] = []
        steps = 0

        def one_pass(batches, objective: Objective, desc: str) -> float:
            """One epoch over ``batches``; returns its mean loss."""
            nonlocal steps
            result = run_loop(
                model,
                batches,
                objective,
                optimizer,
                epochs=1,
                desc=desc,
                show_progress=ctx.show_progress,
                divergence_hint="lower method.lr or method.max_steps",
                autocast=ctx.autocast,
            )
            steps += result.steps
            return result.epoch_losses[0]

        for epoch in range(s.epochs):
            metrics: dict[str, float] = {"unlearn/epoch": epoch + 1}
            if epoch < s.max_steps:
                # The max-step's loss is -KL; report the KL itself, the quantity that grows.
                forget_kl.append(-one_pass(forget_batches, forget_objective, f"SCRUB max-step {epoch + 1}/{s.epochs}"))
                metrics["unlearn/forget_kl"] = forget_kl[-1]
            retain_losses.append(one_pass(retain_batches, retain_objective, f"SCRUB min-step {epoch + 1}/{s.epochs}"))
            metrics["unlearn/retain_loss"] = retain_losses[-1]
            ctx.log_metrics(metrics)
        return UnlearnReport(epoch_losses=retain_losses, certificate={"forget_kl": forget_kl, "steps": steps})
