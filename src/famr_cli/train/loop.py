"""The single training loop: original training, FAMR and every baseline run through it."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from famr_cli.errors import DivergedError
from famr_cli.progress import progress_bar

# objective(model, x, y) -> scalar loss to minimise
Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class LoopHooks:
    """Extension points so methods add behaviour without copying the loop."""

    # Runs after backward, before the optimizer step (e.g. FAMR adds its anchor gradient here).
    after_backward: Callable[[], None] | None = None
    # Called once per epoch with (epoch, mean loss); used for logging curves.
    on_epoch_end: Callable[[int, float], None] | None = None
    # Puts the model in the right mode at each epoch start (e.g. BatchNorm frozen for unlearning).
    set_mode: Callable[[nn.Module], None] | None = None


@dataclass
class LoopResult:
    epoch_losses: list[float] = field(default_factory=list)
    steps: int = 0


def run_loop(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    hooks: LoopHooks | None = None,
    desc: str = "train",
    show_progress: bool = False,
    grad_clip: float | None = None,
    divergence_hint: str = "lower the learning rate",
    autocast: torch.dtype | None = None,
) -> LoopResult:
    hooks = hooks or LoopHooks()
    result = LoopResult()
    steps_per_epoch = len(batches)  # type: ignore[arg-type]
    bar = progress_bar(epochs * steps_per_epoch, desc, show_progress)
    try:
        for epoch in range(epochs):
            (hooks.set_mode or nn.Module.train)(model)
            # Accumulate on device; one host sync per epoch instead of one per step.
            loss_sum = torch.zeros((), device=next(model.parameters()).device)
            for x, y in batches:
                optimizer.zero_grad(set_to_none=True)
                # Only the forward pass runs under autocast; gradients and the step stay fp32.
                with torch.autocast(x.device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
                    loss = objective(model, x, y)
                loss.backward()
                if hooks.after_backward is not None:
                    hooks.after_backward()
                if grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                loss_sum += loss.detach()
                result.steps += 1
                bar.update(1)
            mean_loss = float(loss_sum) / max(steps_per_epoch, 1)
            if not (math.isfinite(mean_loss) and _parameters_finite(model)):
                raise DivergedError(
                    f"{desc} diverged (non-finite loss or weights) in epoch {epoch + 1}, by step {result.steps}; {divergence_hint}."
                )
            result.epoch_losses.append(mean_loss)
            bar.set_postfix(epoch=epoch + 1, loss=f"{mean_loss:.4f}")
            if hooks.on_epoch_end is not None:
                hooks.on_epoch_end(epoch, mean_loss)
    finally:
        bar.close()
    return result


def _parameters_finite(model: nn.Module) -> bool:
    norms = torch._foreach_norm([p.detach() for p in model.parameters()])
    return bool(torch.isfinite(torch.stack(norms)).all())
