"""Forget specifications: each decides D_f and D_r (and the matching test subsets) from the data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from famr_cli.dataset import ImageData
from famr_cli.registry import Registry


@dataclass
class ForgetSplit:
    """Index sets into the training and test tensors of an :class:`ImageData`."""

    forget_train: torch.Tensor
    retain_train: torch.Tensor
    forget_test: torch.Tensor
    retain_test: torch.Tensor
    description: str
    forgotten_classes: list[int]


ForgetSpec = Callable[[DictConfig, ImageData], ForgetSplit]
FORGET_SPECS: Registry[ForgetSpec] = Registry("forget spec", "forget=<name>")


def make_forget_split(cfg: DictConfig, data: ImageData) -> ForgetSplit:
    return FORGET_SPECS.get(cfg.name)(cfg, data)


from famr_cli.forget import by_class, by_sample  # noqa: E402,F401
