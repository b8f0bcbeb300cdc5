"""The optimizer, schedule and BatchNorm mode set up around the one training loop for the methods that
train with a loss over batches (:func:`train_with_ce` on training rows, :func:`train_on_batches` on any
batches), the cross-entropy objective they default to, and closed-form gradient terms added in one fused op
(:func:`add_to_grads_`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F

from famr_cli.method import UnlearnContext
from famr_cli.method.shared.settings import ScheduledSettings, TrainingSettings
from famr_cli.train.loop import LoopHooks, LoopResult, run_loop
from famr_cli.train.optim import build_optimizer, build_schedule


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def method_optimizer(params: Iterable[nn.Parameter], s: TrainingSettings) -> torch.optim.Optimizer:
    return build_optimizer(params, s.optimizer, s.lr, key="method", momentum=s.momentum, weight_decay=s.weight_decay)


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


class Batches(Sized, Protocol):
    """What the loop iterates: (x, y) batches, re-iterable once per epoch, with a length."""

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


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
    """Train ``model`` on training rows ``indices`` (``labels`` replacing the true ones) with ``s``'s
    optimizer and schedule: :func:`train_on_batches` on ``ctx.batches(indices, ...)``.

    ``augment`` and ``bn`` are arguments, not settings, because some methods fix them (finetune always
    updates BatchNorm statistics) instead of offering the option.
    """
    batches = ctx.batches(indices, s.batch_size, augment=augment, labels=labels)
    return train_on_batches(
        model,
        ctx,
        s,
        batches,
        bn=bn,
        desc=desc,
        divergence_hint=divergence_hint,
        objective=objective,
        after_backward=after_backward,
        epoch_metrics=epoch_metrics,
    )


def train_on_batches(
    model: nn.Module,
    ctx: UnlearnContext,
    s: ScheduledSettings,
    batches: Batches,
    *,
    bn: str,
    desc: str,
    divergence_hint: str,
    objective: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy,
    after_backward: Callable[[int, int], None] | None = None,
    epoch_metrics: Callable[[], dict[str, float]] | None = None,
) -> LoopResult:
    """``s.epochs`` passes over ``batches`` with ``s``'s optimizer and schedule, BatchNorm as ``bn`` says.

    ``after_backward(step, total_steps)`` receives the 0-based global step about to be taken and the
    run's step count (schedules such as l1-sparse's decaying penalty need both); ``epoch_metrics``
    adds figures to each epoch's log line.
    """
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
