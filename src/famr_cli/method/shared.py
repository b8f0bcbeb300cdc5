"""What two or more methods share; registers no method, so no method module imports another.

The optimizer options and their checks (:class:`TrainingSettings`, :func:`training_options`), the
BatchNorm mode, the cross-entropy objective, random wrong labels (random_label and salun) and
:func:`train_with_ce`, which sets up batches, optimizer and schedule around the one training loop
for the retain-based baselines and gradient ascent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from famr_cli.checks import flag, number, whole
from famr_cli.errors import FamrError
from famr_cli.method import MethodSettings, UnlearnContext
from famr_cli.train.loop import LoopHooks, LoopResult, run_loop
from famr_cli.train.optim import build_optimizer, build_schedule, optimizer_name, schedule_name

BN_MODES = ("eval", "train")


@dataclass(frozen=True)
class TrainingSettings(MethodSettings):
    """The options of every method that takes optimizer steps."""

    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    epochs: int
    batch_size: int


@dataclass(frozen=True)
class ScheduledSettings(TrainingSettings):
    """The options of the methods that train through :func:`train_with_ce`, which also schedules the lr."""

    schedule: str


@dataclass(frozen=True)
class RetainTrainingSettings(ScheduledSettings):
    """FT's and RL's options: the shared training options, and whether their D_r batches are augmented."""

    augment: bool

    @classmethod
    def parse(cls, c: dict[str, Any]) -> RetainTrainingSettings:
        return cls(**training_options(c, suggested_lr=0.01))


def optimizer_option(value: Any) -> str:
    return optimizer_name(value, "method")


def bn_option(value: Any) -> str:
    if value not in BN_MODES:
        raise FamrError(f"method.bn must be 'eval' (freeze BatchNorm statistics) or 'train' (got '{value}').")
    return str(value)


def training_options(c: Mapping[str, Any], *, suggested_lr: float) -> dict[str, Any]:
    """The baselines' shared options of ``c`` (raw values by field name), checked in this order and typed.

    ``schedule`` and ``augment`` are checked when the settings declare them (``c`` holds exactly
    their fields). Errors name ``method.<key>`` and suggest the method's own ``suggested_lr``.
    """
    values: dict[str, Any] = {"optimizer": optimizer_option(c["optimizer"])}
    if (lr := number(c["lr"], "method.lr", f"{suggested_lr:g}")) <= 0:
        raise FamrError(f"method.lr must be positive (got {c['lr']}); try method.lr={suggested_lr:g}.")
    if not 0 <= (momentum := number(c["momentum"], "method.momentum", 0.9)) < 1:
        raise FamrError(f"method.momentum must be in [0, 1) (got {c['momentum']}); try method.momentum=0.9.")
    if (weight_decay := number(c["weight_decay"], "method.weight_decay", "5e-4")) < 0:
        raise FamrError(f"method.weight_decay must be >= 0 (got {c['weight_decay']}); try method.weight_decay=5e-4.")
    values.update(lr=lr, momentum=momentum, weight_decay=weight_decay)
    values["epochs"] = whole(c["epochs"], "method.epochs", 10, minimum=1)
    values["batch_size"] = whole(c["batch_size"], "method.batch_size", 256, minimum=1)
    if "schedule" in c:
        values["schedule"] = schedule_name(c["schedule"], "method")
    if "augment" in c:
        values["augment"] = flag(c["augment"], "method.augment")
    return values


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def method_optimizer(params: Iterable[nn.Parameter], s: TrainingSettings) -> torch.optim.Optimizer:
    return build_optimizer(params, s.optimizer, s.lr, key="method", momentum=s.momentum, weight_decay=s.weight_decay)


def add_to_grads_(params: list[nn.Parameter], tensors: list[torch.Tensor], *, alpha: float) -> None:
    """``p.grad += alpha * t`` for each parameter, a zero gradient first where there is none, in one fused op.

    Penalties whose gradient is known in closed form (FAMR's anchor, l1-sparse's l1 term) add it
    here instead of through the autograd graph, whose per-parameter nodes would cost a backward
    pass over every weight.
    """
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    torch._foreach_add_([p.grad for p in params], tensors, alpha=alpha)


def cross_entropy(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # fp32 loss even under bf16 autocast: the log-softmax of confident logits loses precision otherwise.
    return F.cross_entropy(m(x).float(), y)


def freeze_batchnorm(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def bn_mode(bn: str) -> Callable[[nn.Module], None]:
    """The loop's ``set_mode`` hook: train mode, with BatchNorm statistics frozen when ``bn`` is 'eval'."""

    def set_mode(m: nn.Module) -> None:
        m.train()
        if bn == "eval":
            freeze_batchnorm(m)

    return set_mode


def random_wrong_labels(y_train: torch.Tensor, forget: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """A copy of ``y_train`` whose ``forget`` rows hold a label drawn uniformly from the other classes.

    Adding an offset in [1, K-1] modulo K maps each true label onto every other class with equal
    probability and never onto itself.
    """
    if num_classes < 2:
        raise FamrError(
            f"method=random_label needs at least two classes to draw a wrong label from (got {num_classes}); use another method."
        )
    generator = torch.Generator().manual_seed(seed)
    forget = forget.cpu()
    offsets = torch.randint(1, num_classes, (len(forget),), generator=generator)
    labels = y_train.clone()
    labels[forget] = ((y_train[forget].cpu() + offsets) % num_classes).to(labels.dtype).to(labels.device)
    return labels


def train_with_ce(
    model: nn.Module,
    ctx: UnlearnContext,
    s: ScheduledSettings,
    indices: torch.Tensor,
    *,
    augment: bool,
    bn: str,
    desc: str,
    divergence_hint: str,
    objective: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy,
    labels: torch.Tensor | None = None,
    after_backward: Callable[[int, int], None] | None = None,
    epoch_metrics: Callable[[], dict[str, float]] | None = None,
) -> LoopResult:
    """Train ``model`` on training rows ``indices`` with ``s``'s optimizer and schedule.

    ``augment`` and ``bn`` are arguments, not settings, because some methods fix them (finetune always
    updates BatchNorm statistics, gradient ascent never augments) instead of offering the option.
    ``after_backward(step, total_steps)`` receives the 0-based global step about to be taken and the
    run's step count (schedules such as l1-sparse's decaying penalty need both); ``epoch_metrics``
    adds figures to each epoch's log line.
    """
    batches = ctx.batches(indices, s.batch_size, augment=augment, labels=labels)
    optimizer = method_optimizer(model.parameters(), s)
    total_steps = s.epochs * len(batches)
    scheduler = build_schedule(optimizer, s.schedule, total_steps, key="method")
    step = 0

    def on_backward() -> None:
        nonlocal step
        if after_backward is not None:
            after_backward(step, total_steps)
        step += 1

    def on_epoch_end(epoch: int, mean_loss: float) -> None:
        ctx.log_metrics(
            {
                "unlearn/epoch": epoch + 1,
                "unlearn/loss": mean_loss,
                "unlearn/lr": optimizer.param_groups[0]["lr"],
                **(epoch_metrics() if epoch_metrics is not None else {}),
            }
        )

    return run_loop(
        model,
        batches,
        objective,
        optimizer,
        epochs=s.epochs,
        scheduler=scheduler,
        hooks=LoopHooks(after_backward=on_backward, on_epoch_end=on_epoch_end, set_mode=bn_mode(bn)),
        desc=desc,
        show_progress=ctx.show_progress,
        divergence_hint=divergence_hint,
        autocast=ctx.autocast,
    )
