"""Unlearning methods: one module and one ``conf/method/<name>.yaml`` each, registered here."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from omegaconf import DictConfig

from famr_cli.dataset import ImageData
from famr_cli.forget import ForgetSplit
from famr_cli.registry import Registry


@dataclass
class UnlearnContext:
    """Everything a method may use. Methods that must not see retained data simply ignore it."""

    data: ImageData
    split: ForgetSplit
    device: torch.device
    seed: int
    show_progress: bool = False
    # Sends a dict of curve points to the experiment logger (wandb or nothing).
    log_metrics: Callable[[dict[str, float]], None] = lambda metrics: None
    # Forward-pass autocast dtype (bf16 on CUDA by default), None for fp32.
    autocast: torch.dtype | None = None


@dataclass
class UnlearnReport:
    """What a method reports beyond the model it edited in place."""

    epoch_losses: list[float] = field(default_factory=list)
    # Method-specific figures that belong in results.json's ``certificate`` section.
    certificate: dict[str, Any] = field(default_factory=dict)


class UnlearningMethod(ABC):
    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.validate()

    def validate(self) -> None:
        """Raise :class:`FamrError` for bad options, before any training starts."""

    @abstractmethod
    def unlearn(self, model: nn.Module, ctx: UnlearnContext) -> UnlearnReport:
        """Edit ``model`` (a copy of the original) in place so that it forgets ``ctx.split``."""


METHODS: Registry[type[UnlearningMethod]] = Registry("method", "method=<name>")


def build_method(cfg: DictConfig) -> UnlearningMethod:
    return METHODS.get(cfg.name)(cfg)


from famr_cli.method import famr  # noqa: E402,F401
