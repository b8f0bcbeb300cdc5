"""What every robustness check sees: one model's outputs on the shared held-out sets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn as nn

from famr_cli.evaluate.robustness.sets import HeldOutSets


@dataclass
class ModelView:
    """One model as the checks see it. ``features`` maps a set name ("forget", "retain", "probe") to
    its pre-logit features; ``outputs`` holds softmax probabilities with their labels on D_f and on
    the never-seen images matched to it ("forget_probs", "forget_labels", "heldout_probs",
    "heldout_labels"). ``model`` is None when the figures came from the cache."""

    name: str
    model: nn.Module | None
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class CheckContext:
    """What a check needs beyond the model: the sets, how to batch images, and where to run."""

    sets: HeldOutSets
    device: torch.device
    # uint8 images -> normalized float batches on the device, in order.
    batches: Callable[[torch.Tensor], list[torch.Tensor]]
    seed: int = 0


class RobustnessCheck:
    """One check. Subclasses set ``name`` (their config key) and ``needs_features``."""

    name: ClassVar[str]
    needs_features: ClassVar[bool] = False

    def measure(self, view: ModelView, ctx: CheckContext) -> dict[str, Any]:
        raise NotImplementedError

    def compare(self, unlearned: dict[str, Any], reference: dict[str, Any], views: dict[str, ModelView]) -> dict[str, Any]:
        """The unlearned model's figures against Retrain's (``reference``); ``views`` for cross-model figures."""
        return {}

    def headline(self, unlearned: dict[str, Any], vs_retrain: dict[str, Any]) -> dict[str, Any]:
        """The few figures of this check that tables and sweep summaries show (``robustness.headline``)."""
        return {}

    def settings(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items()}


@torch.no_grad()
def accuracy_on(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: CheckContext) -> float | None:
    """Percent of ``x`` the model classifies as ``y``, in eval mode; None for no images."""
    if len(y) == 0:
        return None
    was_training = model.training
    model.eval()
    pred = torch.cat([model(xb).argmax(dim=1).cpu() for xb in ctx.batches(x)])
    model.train(was_training)
    return 100.0 * (pred == y).float().mean().item()


def percent_correct(logits: torch.Tensor, y: torch.Tensor) -> float | None:
    return None if len(y) == 0 else 100.0 * (logits.argmax(dim=1).cpu() == y).float().mean().item()
