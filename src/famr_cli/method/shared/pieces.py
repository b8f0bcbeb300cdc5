"""Small pieces several methods use: a frozen copy of the model (a teacher, an attacked original), the
run's autocast for a forward pass, the timm head lookup with the method's own error, and well-mixed seeds
for independent random streams."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn

from famr_cli.errors import FamrError
from famr_cli.method import UnlearnContext


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode with every parameter's ``requires_grad`` off (a teacher, an attacked original)."""
    copied = copy.deepcopy(model).eval()
    copied.requires_grad_(False)
    return copied


def run_autocast(ctx: UnlearnContext, device_type: str) -> torch.autocast:
    """The run's autocast for a forward pass on ``device_type``: ``ctx.autocast``'s dtype, off when it is None."""
    return torch.autocast(device_type, dtype=ctx.autocast or torch.bfloat16, enabled=ctx.autocast is not None)


def classifier_head(model: nn.Module, message: str, *, linear: bool = False) -> nn.Module:
    """The model's classifier through timm's ``get_classifier()``, or :class:`FamrError` with ``message``
    (its ``{model}`` filled with the model's class name) when it has none or, with ``linear``, when it is not one ``nn.Linear``."""
    get_classifier = getattr(model, "get_classifier", None)
    head = get_classifier() if callable(get_classifier) else None
    if not callable(get_classifier) or (linear and not isinstance(head, nn.Linear)):
        raise FamrError(message.format(model=type(model).__name__))
    return head


def mixed_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from integers (e.g. the run's seed, a purpose tag and a step)."""
    return int(np.random.SeedSequence([v % 2**63 for v in values]).generate_state(1, dtype=np.uint64)[0] >> 1)
