"""The ``train`` section (the recipe the original model and Retrain share), typed and checked once.

Every shipped ``conf/train/<name>.yaml`` sets every key, so the defaults live there alone; a key
deleted from the section is named rather than silently defaulted.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from omegaconf import DictConfig

from famr_cli.augment import PADDING_MODES, Augment
from famr_cli.checks import flag, number, whole
from famr_cli.errors import FamrError
from famr_cli.train.optim import optimizer_name, schedule_name

AUGMENT_KEYS = ("crop_padding", "hflip", "padding_mode", "cutout")


def _require(section: Any, keys: tuple[str, ...], prefix: str) -> None:
    for key in keys:
        if key not in section:
            raise FamrError(
                f"{prefix} needs {prefix}.{key}, which the config does not set; restore it (every conf/train/<name>.yaml sets it)."
            )


def augment_settings(section: Any) -> Augment:
    """A ``train.augment`` section, checked: crops, flips, their padding and Cutout."""
    _require(section, AUGMENT_KEYS, "train.augment")
    crop_padding = whole(section["crop_padding"], "train.augment.crop_padding", 4, minimum=0)
    hflip = flag(section["hflip"], "train.augment.hflip")
    if section["padding_mode"] not in PADDING_MODES:
        raise FamrError(f"Unknown train.augment.padding_mode '{section['padding_mode']}': use zeros or reflect.")
    cutout = whole(section["cutout"], "train.augment.cutout", 8, minimum=0)
    return Augment(crop_padding, hflip, str(section["padding_mode"]), cutout)


@dataclass(frozen=True)
class TrainSettings:
    optimizer: str
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    schedule: str
    warmup_epochs: int
    epochs: int
    batch_size: int
    label_smoothing: float
    grad_clip: float | None
    augment: Augment
    seed: int

    @classmethod
    def from_config(cls, cfg: DictConfig) -> TrainSettings:
        """The settings of the ``train`` section ``cfg``, or the first bad value's :class:`FamrError`, in a fixed order."""
        _require(cfg, tuple(f.name for f in fields(cls)), "train")
        optimizer = optimizer_name(cfg.optimizer, "train")
        lr = number(cfg.lr, "train.lr", 0.05, positive=True)
        momentum = number(cfg.momentum, "train.momentum", 0.9, minimum=0)
        nesterov = flag(cfg.nesterov, "train.nesterov")
        weight_decay = number(cfg.weight_decay, "train.weight_decay", "5e-4", minimum=0)
        schedule = schedule_name(cfg.schedule, "train")
        warmup_epochs = whole(cfg.warmup_epochs, "train.warmup_epochs", 1, minimum=0)
        epochs = whole(cfg.epochs, "train.epochs", 80, minimum=1)
        batch_size = whole(cfg.batch_size, "train.batch_size", 64, minimum=1)
        if not 0 <= (smoothing := number(cfg.label_smoothing, "train.label_smoothing", 0.1)) <= 1:
            raise FamrError(f"train.label_smoothing must lie in [0, 1] (got {cfg.label_smoothing}); use e.g. train.label_smoothing=0.1.")
        grad_clip = None if cfg.grad_clip is None else number(cfg.grad_clip, "train.grad_clip", 1.0, positive=True)
        augment = augment_settings(cfg.augment)
        seed = whole(cfg.seed, "train.seed", 0, minimum=0)
        return cls(
            optimizer,
            lr,
            momentum,
            nesterov,
            weight_decay,
            schedule,
            warmup_epochs,
            epochs,
            batch_size,
            smoothing,
            grad_clip,
            augment,
            seed,
        )
