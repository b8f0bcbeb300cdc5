"""Fine-tuning (FT): keep training the original model on the retained set D_r alone.

The forget set is never shown again, so D_f is forgotten only through catastrophic forgetting.
FT is the standard first baseline of the unlearning literature (Warnecke et al., "Machine
Unlearning of Features and Labels", NDSS 2023; Jia et al., "Model Sparsity Can Simplify Machine
Unlearning", NeurIPS 2023; Fan et al., "SalUn", ICLR 2024), whose public CIFAR-10 recipe is SGD
with momentum 0.9 and weight decay 5e-4, lr 0.01-0.1, 10 epochs (checked against
github.com/OPTML-Group/Unlearn-Sparse, ``unlearn/FT.py``: lr 0.01, 10 epochs).

This module also holds what the retain-based baselines (``random_label``, ``l1_sparse``) share:
option checks, the cross-entropy objective and :func:`train_with_ce`, which sets up batches,
optimizer and schedule around the one training loop.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from omegaconf import DictConfig

from famr_cli.checks import flag, number, whole
from famr_cli.errors import FamrError
from famr_cli.evaluate.metrics import parameter_distance
from famr_cli.method import METHODS, UnlearnContext, UnlearningMethod, UnlearnReport
from famr_cli.method.famr import freeze_batchnorm
from famr_cli.train.loop import LoopHooks, LoopResult, run_loop
from famr_cli.train.optim import OPTIMIZERS, SCHEDULES, build_optimizer, build_schedule

BN_MODES = ("eval", "train")


def cross_entropy(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # fp32 loss even under bf16 autocast: the log-softmax of confident logits loses precision otherwise.
    return F.cross_entropy(m(x).float(), y)


def check_training_options(cfg: DictConfig, *, suggested_lr: float) -> None:
    """The options every baseline shares; raises :class:`FamrError` naming ``method.<key>``."""
    if cfg.optimizer not in OPTIMIZERS:
        raise FamrError(f"Unknown optimizer '{cfg.optimizer}': set method.optimizer to one of {', '.join(OPTIMIZERS)}.")
    if number(cfg.lr, "method.lr", f"{suggested_lr:g}") <= 0:
        raise FamrError(f"method.lr must be positive (got {cfg.lr}); try method.lr={suggested_lr:g}.")
    if not 0 <= number(cfg.momentum, "method.momentum", 0.9) < 1:
        raise FamrError(f"method.momentum must be in [0, 1) (got {cfg.momentum}); try method.momentum=0.9.")
    if number(cfg.weight_decay, "method.weight_decay", "5e-4") < 0:
        raise FamrError(f"method.weight_decay must be >= 0 (got {cfg.weight_decay}); try method.weight_decay=5e-4.")
    whole(cfg.epochs, "method.epochs", 10, minimum=1)
    whole(cfg.batch_size, "method.batch_size", 256, minimum=1)
    if "schedule" in cfg and cfg.schedule not in SCHEDULES:
        raise FamrError(f"Unknown schedule '{cfg.schedule}': set method.schedule to one of {', '.join(SCHEDULES)}.")
    if "augment" in cfg:
        flag(cfg.augment, "method.augment")


def check_bn_option(cfg: DictConfig) -> None:
    if cfg.bn not in BN_MODES:
        raise FamrError(f"method.bn must be 'eval' (freeze BatchNorm statistics) or 'train' (got '{cfg.bn}').")


def bn_mode(bn: str) -> Callable[[nn.Module], None]:
    """The loop's ``set_mode`` hook: train mode, with BatchNorm statistics frozen when ``bn`` is 'eval'."""

    def set_mode(m: nn.Module) -> None:
        m.train()
        if bn == "eval":
            freeze_batchnorm(m)

    return set_mode


def train_with_ce(
    model: nn.Module,
    ctx: UnlearnContext,
    cfg: DictConfig,
    indices: torch.Tensor,
    *,
    desc: str,
    divergence_hint: str,
    objective: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy,
    labels: torch.Tensor | None = None,
    after_backward: Callable[[int, int], None] | None = None,
    epoch_metrics: Callable[[], dict[str, float]] | None = None,
) -> LoopResult:
    """Train ``model`` on training rows ``indices`` with ``cfg``'s optimizer, schedule and BN mode.

    ``after_backward(step, total_steps)`` receives the 0-based global step about to be taken and the
    run's step count (schedules such as l1-sparse's decaying penalty need both); ``epoch_metrics``
    adds figures to each epoch's log line.
    """
    batches = ctx.batches(indices, int(cfg.batch_size), augment=bool(cfg.get("augment", False)), labels=labels)
    epochs = int(cfg.epochs)
    optimizer = build_optimizer(
        model.parameters(), cfg.optimizer, float(cfg.lr), key="method", momentum=float(cfg.momentum), weight_decay=float(cfg.weight_decay)
    )
    total_steps = epochs * len(batches)
    scheduler = build_schedule(optimizer, cfg.schedule, total_steps, key="method")
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
        epochs=epochs,
        scheduler=scheduler,
        hooks=LoopHooks(after_backward=on_backward, on_epoch_end=on_epoch_end, set_mode=bn_mode(cfg.get("bn", "train"))),
        desc=desc,
        show_progress=ctx.show_progress,
        divergence_hint=divergence_hint,
        autocast=ctx.autocast,
    )


@METHODS.register("finetune")
class Finetune(UnlearningMethod):
    def validate(self) -> None:
        check_training_options(self.cfg, suggested_lr=0.01)

    def unlearn(self, model: nn.Module, ctx: UnlearnContext) -> UnlearnReport:
        theta0 = [p.detach().clone() for p in model.parameters()]
        retain = ctx.split.retain_train
        result = train_with_ce(model, ctx, self.cfg, retain, desc="finetune", divergence_hint="lower method.lr")
        return UnlearnReport(
            epoch_losses=result.epoch_losses,
            certificate={
                "steps": result.steps,
                "retain_samples": len(retain),
                "param_dist": parameter_distance([p.detach() for p in model.parameters()], theta0),
            },
        )
