"""The options every method that takes optimizer steps shares, parsed and checked once: optimizer, lr,
momentum, weight decay, epochs, batch size (:class:`TrainingSettings`, :func:`training_options`), the lr
schedule (:class:`ScheduledSettings`), FT's and RL's augmentation (:class:`RetainTrainingSettings`) and the
BatchNorm mode (:func:`bn_option`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from famr_cli.checks import flag, number, whole
from famr_cli.errors import FamrError
from famr_cli.method import MethodSettings
from famr_cli.train.optim import optimizer_name, schedule_name

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
    """The options of the methods that train through :func:`.training.train_with_ce`, which also schedules the lr."""

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
