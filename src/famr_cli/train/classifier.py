"""Supervised training with the ``train`` recipe: the original model (and, later, Retrain) use it."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from famr_cli.batches import make_batches
from famr_cli.dataset import ImageData
from famr_cli.train.checkpoint import TrainingCheckpoint
from famr_cli.train.distributed import check_batch_size, current_shard
from famr_cli.train.loop import LoopHooks, LoopResult, run_loop
from famr_cli.train.optim import build_optimizer, build_schedule
from famr_cli.train.settings import TrainSettings


def fit_classifier(
    model: nn.Module,
    data: ImageData,
    indices: torch.Tensor | None,
    recipe: TrainSettings,
    device: torch.device,
    *,
    show_progress: bool = False,
    on_epoch_end: Callable[[int, float], None] | None = None,
    desc: str = "train",
    autocast: torch.dtype | None = None,
    checkpoint: TrainingCheckpoint | None = None,
    compile_model: bool = False,
) -> LoopResult:
    """Train ``model`` on the training samples at ``indices`` (all of them when None) with ``recipe``."""
    shard = current_shard()
    check_batch_size(recipe.batch_size, shard)
    batches = make_batches(
        data,
        data.x_train,
        data.y_train,
        indices=indices,  # rows are gathered per batch: a subset of streamed data is never copied whole
        batch_size=recipe.batch_size,
        device=device,
        shuffle=True,
        augment=recipe.augment,
        seed=recipe.seed,
        train=True,
        shard=shard,
    )
    optimizer = build_optimizer(
        model.parameters(),
        recipe.optimizer,
        recipe.lr,
        key="train",
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
        weight_decay=recipe.weight_decay,
    )
    total_steps = recipe.epochs * len(batches)
    scheduler = build_schedule(optimizer, recipe.schedule, total_steps, key="train", warmup_steps=recipe.warmup_epochs * len(batches))
    smoothing = recipe.label_smoothing

    def objective(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(forward(xb), yb, label_smoothing=smoothing)

    if shard is not None:
        # DDP averages the processes' gradients each step and starts them all from rank 0's weights.
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    # The compiled module shares the weights; the loop keeps the plain one for modes, checkpoints and checks,
    # so state dicts never gain torch.compile's "_orig_mod." prefix.
    forward = torch.compile(model) if compile_model else model
    return run_loop(
        model,
        batches,
        objective,
        optimizer,
        epochs=recipe.epochs,
        scheduler=scheduler,
        hooks=LoopHooks(on_epoch_end=on_epoch_end),
        desc=desc,
        show_progress=show_progress,
        grad_clip=recipe.grad_clip,
        divergence_hint="lower train.lr or set train.grad_clip",
        autocast=autocast,
        checkpoint=checkpoint,
    )
