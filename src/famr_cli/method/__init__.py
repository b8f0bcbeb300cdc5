"""Unlearning methods: one module and one ``conf/method/<name>.yaml`` each, registered here.

Adding a method: write ``famr_cli/method/<name>.py`` with a class decorated by
``@METHODS.register("<name>")`` and ``conf/method/<name>.yaml`` with ``name: <name>``. Every module
in this package is imported at start-up, so nothing else needs editing.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from omegaconf import DictConfig

from famr_cli.batches import Augment, StreamedBatches, TensorBatches, make_batches
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
    # The training recipe's augmentation, for methods that train on D_r as the original did.
    augment: Augment | None = None
    # The retrained gold standard (trained once, cached) and the seconds its training took, for
    # method=retrain; None when unavailable.
    retrain_reference: Callable[[], tuple[nn.Module, float]] | None = None

    def batches(
        self,
        indices: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = True,
        augment: bool = False,
        labels: torch.Tensor | None = None,
    ) -> TensorBatches | StreamedBatches:
        """Training-set rows ``indices`` in mini-batches on the device, seeded by ``seed``.

        ``augment`` applies the training recipe's augmentation; ``labels`` (one per training
        sample, e.g. random relabels) replaces the true labels.
        """
        return make_batches(
            self.data,
            self.data.x_train,
            self.data.y_train if labels is None else labels,
            batch_size=batch_size,
            device=self.device,
            shuffle=shuffle,
            augment=self.augment if augment else None,
            seed=self.seed,
            train=True,
            indices=indices,
        )


@dataclass
class UnlearnReport:
    """What a method reports beyond the model it edited in place."""

    epoch_losses: list[float] = field(default_factory=list)
    # Method-specific figures that belong in results.json's ``certificate`` section.
    certificate: dict[str, Any] = field(default_factory=dict)
    # The method's real cost when it was paid earlier (Retrain served from the cache): reported as
    # its unlearning time instead of the wall time of this call.
    recorded_s: float | None = None


class UnlearningMethod(ABC):
    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.validate()

    def validate(self) -> None:
        """Raise :class:`FamrError` for bad options, before any training starts."""

    def check_model(self, model: nn.Module) -> None:
        """Raise :class:`FamrError` for options the backbone cannot honour (called on an untrained copy)."""

    @abstractmethod
    def unlearn(self, model: nn.Module, ctx: UnlearnContext) -> UnlearnReport:
        """Edit ``model`` (a copy of the original) in place so that it forgets ``ctx.split``."""

    def certify(self, model: nn.Module, original: nn.Module, ctx: UnlearnContext, settings: Any) -> dict[str, Any]:
        """Diagnostics of the finished unlearning for results.json's ``certificate`` (FAMR: stationarity).

        Called after the timed step, so what it costs never counts in the method's RTE; ``settings``
        is the evaluate section (:class:`famr_cli.evaluate.report.EvalSettings`).
        """
        return {}


METHODS: Registry[type[UnlearningMethod]] = Registry("method", "method=<name>")


def build_method(cfg: DictConfig) -> UnlearningMethod:
    return METHODS.get(cfg.name)(cfg)


def _import_all_methods() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_import_all_methods()
