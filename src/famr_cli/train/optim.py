"""Optimizers and learning-rate schedules from config: shared by original training and every method."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from famr_cli.errors import FamrError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step")


def optimizer_name(value: object, section: str) -> str:
    """``value`` if it names an optimizer, else the one sentence every section (``train``, ``method``) gives."""
    if value not in OPTIMIZERS:
        raise FamrError(f"Unknown optimizer '{value}': set {section}.optimizer to one of {', '.join(OPTIMIZERS)}.")
    return str(value)


def schedule_name(value: object, section: str) -> str:
    if value not in SCHEDULES:
        raise FamrError(f"Unknown schedule '{value}': set {section}.schedule to one of {', '.join(SCHEDULES)}.")
    return str(value)


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    name: str,
    lr: float,
    *,
    key: str,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """``key`` is the config prefix (``train`` or ``method``) so errors name the exact override."""
    if lr <= 0:
        raise FamrError(f"{key}.lr must be positive (got {lr}); try {key}.lr=0.01.")
    if weight_decay < 0:
        raise FamrError(f"{key}.weight_decay must be >= 0 (got {weight_decay}).")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if optimizer_name(name, key) == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise AssertionError(f"optimizer {name} is listed in OPTIMIZERS but not built")


def build_schedule(
    optimizer: torch.optim.Optimizer, name: str, total_steps: int, *, key: str, warmup_steps: int = 0, step_gamma: float = 0.1
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step multiplier on the base lr: linear warm-up, then constant, cosine or step decay."""
    schedule_name(name, key)
    total = max(total_steps, 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(total - warmup_steps, 1)
        if name == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        if name == "step":
            # Decay by step_gamma at 50% and 75% of training, the classic ResNet recipe.
            return step_gamma ** ((progress >= 0.5) + (progress >= 0.75))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
