"""CF-k's and EU-k's shared core (Goel et al.): which layers count, the last k of them and the norms
trained with them, their official SGDR schedule, and the training of those layers on D_r
(:class:`LastLayersSettings`, :func:`last_layers`, :func:`unlearn_last_layers`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from famr_cli.checks import number, whole
from famr_cli.errors import FamrError
from famr_cli.method import UnlearnContext, UnlearnReport
from famr_cli.method.shared.settings import ScheduledSettings, bn_option, training_options
from famr_cli.method.shared.training import bn_mode, cross_entropy, method_optimizer, trainable_parameters
from famr_cli.train.loop import LoopHooks, LoopResult, run_loop
from famr_cli.train.optim import build_schedule

# What CF-k and EU-k count as a layer (their official code counts nn.Conv2d and nn.Linear modules), and
# the normalisation layers that train along with the counted layer they follow (theirs: nn.BatchNorm2d;
# LayerNorm and GroupNorm are ours, so that a ViT's norms train like a ResNet's BatchNorms).
COUNTED_LAYERS = (nn.Conv2d, nn.Linear)
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)

# The lr schedules of the last-k training: SGDR (theirs) and famr's per-step schedules.
LAST_LAYERS_SCHEDULES = ("sgdr", "constant", "cosine", "step")


@dataclass(frozen=True)
class LastLayersSettings(ScheduledSettings):
    """CF-k's and EU-k's options: how many layers train, and their official SGDR schedule, clipping and BatchNorm mode."""

    k: int
    min_lr_factor: float
    grad_clip: float
    augment: bool
    bn: str

    @classmethod
    def parse(cls, c: dict[str, Any]) -> LastLayersSettings:
        k = whole(c["k"], "method.k", 10, minimum=1)
        if c["schedule"] not in LAST_LAYERS_SCHEDULES:
            raise FamrError(
                f"method.schedule must be 'sgdr' (cosine from method.lr with warm restarts, cycles doubling from one epoch), "
                f"'constant', 'cosine' or 'step' (got '{c['schedule']}'); use method.schedule=sgdr."
            )
        shared = training_options({key: value for key, value in c.items() if key != "schedule"}, suggested_lr=0.1)
        if not 0 <= (floor := number(c["min_lr_factor"], "method.min_lr_factor", 0.05)) <= 1:
            raise FamrError(
                f"method.min_lr_factor must be in [0, 1], SGDR's lowest lr as a fraction of method.lr (got {c['min_lr_factor']}); "
                "try method.min_lr_factor=0.05."
            )
        grad_clip = number(c["grad_clip"], "method.grad_clip", 10, minimum=0)
        return cls(**shared, schedule=str(c["schedule"]), k=k, min_lr_factor=floor, grad_clip=grad_clip, bn=bn_option(c["bn"]))


def counted_layers(model: nn.Module) -> list[nn.Module]:
    """``model``'s convolutions and linear layers, in module-registration order."""
    return [m for m in model.modules() if isinstance(m, COUNTED_LAYERS)]


def last_layers(model: nn.Module, k: int) -> tuple[list[nn.Module], list[nn.Module]]:
    """The last ``k`` counted layers and the normalisation layers met on the way to the k-th.

    The walk goes from the output through the modules in reverse registration order, as the official
    ``resetFinalResnet``: a norm registered after a counted layer (a ResNet's bn2 after conv2, a ViT's
    final norm before its head) is met first, so it trains with that layer; the walk stops at the k-th.
    """
    layers: list[nn.Module] = []
    norms: list[nn.Module] = []
    for module in reversed([m for m in model.modules() if isinstance(m, COUNTED_LAYERS + NORM_LAYERS)]):
        if len(layers) == k:
            break
        (layers if isinstance(module, COUNTED_LAYERS) else norms).append(module)
    return layers, norms


def check_last_layers(model: nn.Module, k: int, method: str) -> None:
    if k > (count := len(counted_layers(model))):
        raise FamrError(
            f"method={method} cannot train the last {k} layers of this backbone, which has {count} (convolutions and linear layers); "
            f"use method.k between 1 and {count}."
        )


def sgdr_factor(epoch: int, floor: float) -> float:
    """SGDR's lr multiplier in 0-based ``epoch``: a cosine from 1 down to ``floor`` over cycles of 1, 2, 4, ...
    epochs, back to 1 at each cycle's start (torch's CosineAnnealingWarmRestarts(T_0=1, T_mult=2), stepped per epoch)."""
    start, length = 0, 1
    while epoch >= start + length:
        start, length = start + length, 2 * length
    return float(floor + (1 - floor) * (1 + np.cos(np.pi * (epoch - start) / length)) / 2)


def last_layers_schedule(optimizer: torch.optim.Optimizer, s: LastLayersSettings, epoch_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The per-step scheduler: SGDR holds each epoch's lr for all its steps; the others are famr's per-step schedules."""
    if s.schedule != "sgdr":
        return build_schedule(optimizer, s.schedule, s.epochs * epoch_steps, key="method")
    per_epoch = max(epoch_steps, 1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: sgdr_factor(step // per_epoch, s.min_lr_factor))


def train_last_layers(model: nn.Module, ctx: UnlearnContext, s: LastLayersSettings, trained: list[nn.Module], *, desc: str) -> LoopResult:
    """Cross-entropy on D_r for the parameters of the ``trained`` modules, every other parameter frozen
    (its ``requires_grad`` is restored afterwards); BatchNorm everywhere as ``s.bn`` says."""
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    for module in trained:
        module.requires_grad_(True)
    try:
        optimizer = method_optimizer(trainable_parameters(model), s)
        batches = ctx.batches(ctx.split.retain_train, s.batch_size, augment=s.augment)
        scheduler = last_layers_schedule(optimizer, s, len(batches))

        def on_epoch_end(epoch: int, mean_loss: float) -> None:
            ctx.log_metrics({"unlearn/epoch": epoch + 1, "unlearn/loss": mean_loss, "unlearn/lr": optimizer.param_groups[0]["lr"]})

        return run_loop(
            model,
            batches,
            cross_entropy,
            optimizer,
            epochs=s.epochs,
            scheduler=scheduler,
            hooks=LoopHooks(on_epoch_end=on_epoch_end, set_mode=bn_mode(s.bn)),
            desc=desc,
            show_progress=ctx.show_progress,
            grad_clip=s.grad_clip or None,
            divergence_hint="lower method.lr or method.grad_clip",
            autocast=ctx.autocast,
        )
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


def unlearn_last_layers(
    model: nn.Module,
    ctx: UnlearnContext,
    s: LastLayersSettings,
    *,
    desc: str,
    reinitialise: Callable[[list[nn.Module], int], None] | None = None,
) -> UnlearnReport:
    """CF-k's and EU-k's unlearning: train the last ``s.k`` layers (and the norms met on the way) on D_r,
    after ``reinitialise(layers, ctx.seed)`` where one is given (EU-k's fresh draw of those layers)."""
    layers, norms = last_layers(model, s.k)
    if reinitialise is not None:
        reinitialise(layers, ctx.seed)
    result = train_last_layers(model, ctx, s, layers + norms, desc=desc)
    trained = sum(p.numel() for module in layers + norms for p in module.parameters())
    return UnlearnReport(
        epoch_losses=result.epoch_losses,
        certificate={"steps": result.steps, "retain_samples": len(ctx.split.retain_train), "trained_parameters": trained},
    )
