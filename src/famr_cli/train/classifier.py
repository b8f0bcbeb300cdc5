"""Supervised training with the ``train`` recipe: the original model (and, later, Retrain) use it."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from omegaconf import DictConfig
from torch.nn.parallel import DistributedDataParallel

from famr_cli.augment import Augment
from famr_cli.batches import make_batches
from famr_cli.dataset import ImageData
from famr_cli.errors import FamrError
from famr_cli.train.checkpoint import TrainingCheckpoint
from famr_cli.train.distributed import check_batch_size, current_shard
from famr_cli.train.loop import LoopHooks, LoopResult, run_loop
from famr_cli.train.optim import build_optimizer, build_schedule


def validate_recipe(cfg: DictConfig) -> None:
    if int(cfg.epochs) < 1:
        raise FamrError(f"train.epochs must be at least 1 (got {cfg.epochs}).")
    if int(cfg.batch_size) < 1:
        raise FamrError(f"train.batch_size must be at least 1 (got {cfg.batch_size}).")
    if cfg.augment.crop_padding < 0:
        raise FamrError(f"train.augment.crop_padding must be >= 0 (got {cfg.augment.crop_padding}).")


def fit_classifier(
    model: nn.Module,
    data: ImageData,
    indices: torch.Tensor | None,
    cfg: DictConfig,
    device: torch.device,
    *,
    show_progress: bool = False,
    on_epoch_end: Callable[[int, float], None] | None = None,
    desc: str = "train",
    autocast: torch.dtype | None = None,
    checkpoint: TrainingCheckpoint | None = None,
    compile_model: bool = False,
) -> LoopResult:
    """Train ``model`` on the training samples at ``indices`` (all of them when None)."""
    validate_recipe(cfg)
    shard = current_shard()
    check_batch_size(int(cfg.batch_size), shard)
    batches = make_batches(
        data,
        data.x_train,
        data.y_train,
        indices=indices,  # rows are gathered per batch: a subset of streamed data is never copied whole
        batch_size=int(cfg.batch_size),
        device=device,
        shuffle=True,
        augment=Augment.from_config(cfg.augment),
        seed=int(cfg.seed),
        train=True,
        shard=shard,
    )
    optimizer = build_optimizer(
        model.parameters(),
        cfg.optimizer,
        float(cfg.lr),
        key="train",
        momentum=float(cfg.momentum),
        nesterov=bool(cfg.nesterov),
        weight_decay=float(cfg.weight_decay),
    )
    total_steps = int(cfg.epochs) * len(batches)
    scheduler = build_schedule(optimizer, cfg.schedule, total_steps, key="train", warmup_steps=int(cfg.warmup_epochs) * len(batches))
    smoothing = float(cfg.label_smoothing)

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
        epochs=int(cfg.epochs),
        scheduler=scheduler,
        hooks=LoopHooks(on_epoch_end=on_epoch_end),
        desc=desc,
        show_progress=show_progress,
        grad_clip=cfg.get("grad_clip"),
        divergence_hint="lower train.lr or set train.grad_clip",
        autocast=autocast,
        checkpoint=checkpoint,
    )
