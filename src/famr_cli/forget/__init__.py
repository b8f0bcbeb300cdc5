"""Forget specifications: each decides D_f and D_r (and the matching test subsets) from the data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from famr_cli.dataset import DatasetShape, ImageData
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
    # Set by specs that change the training data itself (forget=style): the original model is then
    # trained on ``x_train``/``y_train`` instead of the dataset's tensors, and its cache key includes
    # the forget section (see TRAINING_DATA_SPECS).
    modifies_training_data: bool = False
    x_train: torch.Tensor | None = None
    y_train: torch.Tensor | None = None
    style: Callable[[torch.Tensor], torch.Tensor] | None = None  # the transform, to build the stylized test set
    relabel_to: int | None = None  # the label stylized training images carry, when relabelled


ForgetSpec = Callable[[DictConfig, ImageData], ForgetSplit]
FORGET_SPECS: Registry[ForgetSpec] = Registry("forget spec", "forget=<name>")
# check(forget section, dataset shape): the spec's checks that need no decoded data, run before any work.
ForgetCheck = Callable[[DictConfig, DatasetShape], None]
FORGET_CHECKS: dict[str, ForgetCheck] = {}
# Names of specs whose split changes the training data, so the original model depends on them.
TRAINING_DATA_SPECS: set[str] = set()


def modifies_training_data(cfg: DictConfig) -> bool:
    """Whether the forget spec ``cfg`` (the ``forget`` section) changes the data the original model trains on."""
    return str(cfg.get("name")) in TRAINING_DATA_SPECS


def check_forget_config(cfg: DictConfig, shape: DatasetShape) -> None:
    """Reject a bad ``forget`` section from the dataset's classes and channels alone, before any data is decoded.

    The split itself (:func:`make_forget_split`) repeats these checks and adds those that need the
    data, such as a fraction that rounds to no sample at all.
    """
    FORGET_SPECS.get(str(cfg.get("name")))
    check = FORGET_CHECKS.get(str(cfg.name))
    if check is not None:
        check(cfg, shape)


def make_forget_split(cfg: DictConfig, data: ImageData) -> ForgetSplit:
    return FORGET_SPECS.get(cfg.name)(cfg, data)


from famr_cli.forget import by_class, by_sample, style  # noqa: E402,F401
