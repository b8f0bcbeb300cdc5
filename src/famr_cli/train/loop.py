"""The single training loop: original training, FAMR and every baseline run through it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from famr_cli.errors import DivergedError
from famr_cli.interrupts import raise_if_interrupted
from famr_cli.progress import progress_bar
from famr_cli.train.checkpoint import TrainingCheckpoint, rng_state, set_rng_state

log = logging.getLogger("famr")

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
    resumed_from_epoch: int = 0  # epochs restored from a training-state checkpoint (0: started fresh)
    seconds: float = 0.0  # wall time of all epochs run, including those before an interruption


# How often (in steps) the loop looks at the device-side divergence flag: one host sync per this many steps.
DIVERGENCE_CHECK_EVERY = 50


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
    checkpoint: TrainingCheckpoint | None = None,
) -> LoopResult:
    """``epochs`` passes over ``batches``; with ``checkpoint``, resumes from its saved state and saves new ones."""
    hooks = hooks or LoopHooks()
    result = LoopResult()
    steps_per_epoch = len(batches)  # type: ignore[arg-type]
    device = next(model.parameters()).device
    if checkpoint is not None:
        _resume(checkpoint, model, optimizer, scheduler, batches, result)
    bar = progress_bar(epochs * steps_per_epoch, desc, show_progress, initial=result.steps)
    start, seconds_before = time.perf_counter(), result.seconds
    saving_s = 0.0  # training-state saves are bookkeeping: kept out of the training time the run reports
    # The first step whose loss was not finite, tracked on the device so finding it costs no sync per step.
    step_counter = torch.full((), result.steps, dtype=torch.long, device=device)
    first_bad_step = torch.full((), -1, dtype=torch.long, device=device)
    try:
        for epoch in range(result.resumed_from_epoch, epochs):
            (hooks.set_mode or nn.Module.train)(model)
            # Accumulate on device; one host sync per epoch instead of one per step.
            loss_sum = torch.zeros((), device=device)
            for x, y in batches:
                raise_if_interrupted()
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
                loss = loss.detach()
                loss_sum += loss
                step_counter += 1
                first_bad_step = torch.where((first_bad_step < 0) & ~torch.isfinite(loss), step_counter, first_bad_step)
                result.steps += 1
                if result.steps % DIVERGENCE_CHECK_EVERY == 0:
                    _stop_if_diverged(first_bad_step, model, desc, epoch, steps_per_epoch, divergence_hint, check_weights=False)
                bar.update(1)
            _stop_if_diverged(
                first_bad_step, model, desc, epoch, steps_per_epoch, divergence_hint, check_weights=True, at_step=result.steps
            )
            mean_loss = float(loss_sum) / max(steps_per_epoch, 1)
            result.epoch_losses.append(mean_loss)
            bar.set_postfix(epoch=epoch + 1, loss=f"{mean_loss:.4f}")
            if hooks.on_epoch_end is not None:
                hooks.on_epoch_end(epoch, mean_loss)
            result.seconds = seconds_before + time.perf_counter() - start - saving_s
            if checkpoint is not None and checkpoint.due(epoch + 1, epochs):
                save_start = time.perf_counter()
                checkpoint.save(_training_state(epoch + 1, epochs, model, optimizer, scheduler, batches, result))
                saving_s += time.perf_counter() - save_start
    finally:
        bar.close()
    return result


def _stop_if_diverged(
    first_bad_step: torch.Tensor,
    model: nn.Module,
    desc: str,
    epoch: int,
    steps_per_epoch: int,
    hint: str,
    *,
    check_weights: bool,
    at_step: int = 0,
) -> None:
    bad_step = int(first_bad_step)
    if bad_step >= 0:
        where = f"at step {bad_step} (epoch {(bad_step - 1) // max(steps_per_epoch, 1) + 1})"
        raise DivergedError(f"{desc} diverged: the loss became NaN or infinite {where}; {hint}.")
    if check_weights and not _parameters_finite(model):
        raise DivergedError(f"{desc} diverged: a weight became NaN or infinite in epoch {epoch + 1}, by step {at_step}; {hint}.")


def _training_state(epoch: int, epochs: int, model, optimizer, scheduler, batches, result: LoopResult) -> dict:
    return {
        "epoch": epoch,
        "epochs": epochs,
        "steps": result.steps,
        "epoch_losses": list(result.epoch_losses),
        "seconds": result.seconds,
        "model": _unwrapped(model).state_dict(),  # no DDP "module." prefix: resumable at any process count
        "optimizer": optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "batches": batches.state_dict() if hasattr(batches, "state_dict") else None,
        "rng": rng_state(),
    }


def _resume(checkpoint: TrainingCheckpoint, model, optimizer, scheduler, batches, result: LoopResult) -> None:
    state = checkpoint.load()
    if state is None:
        return
    _unwrapped(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if state["batches"] is not None:
        batches.load_state_dict(state["batches"])  # type: ignore[attr-defined]
    set_rng_state(state["rng"])
    result.resumed_from_epoch = int(state["epoch"])
    result.steps = int(state["steps"])
    result.epoch_losses = [float(v) for v in state["epoch_losses"]]
    result.seconds = float(state["seconds"])
    log.info(
        "Resuming the %s training from its saved state after epoch %d of %d (%s).",
        checkpoint.what,
        result.resumed_from_epoch,
        int(state["epochs"]),
        checkpoint.directory,
    )


def _unwrapped(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def _parameters_finite(model: nn.Module) -> bool:
    norms = torch._foreach_norm([p.detach() for p in model.parameters()])
    return bool(torch.isfinite(torch.stack(norms)).all())
