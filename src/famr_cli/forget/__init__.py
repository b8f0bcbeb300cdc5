"""Forget specifications: each decides D_f and D_r (and the matching test subsets) from the data.

Adding a spec: write ``famr_cli/forget/<name>.py`` with one subclass of :class:`ForgetSpec`
decorated by ``@FORGET_SPECS.register("<name>")``, and ``conf/forget/<name>.yaml`` with
``name: <name>`` and the section's keys. The class implements ``split(cfg, data)``; it may override
``check(cfg, shape)`` to reject a bad section from the dataset's classes and channels alone, before
anything is decoded (the default checks nothing), and sets ``modifies_training_data = True`` when
its split changes the images the original model trains on (the split then returns them in
``x_train``/``y_train``). Every module in this package is imported at start-up
(:func:`famr_cli.registry.import_submodules`), so nothing else needs editing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from omegaconf import DictConfig

from famr_cli.dataset import DatasetShape, ImageData
from famr_cli.registry import Registry, import_submodules


@dataclass
class ForgetSplit:
    """Index sets into the training and test tensors of an :class:`ImageData`."""

    forget_train: torch.Tensor
    retain_train: torch.Tensor
    forget_test: torch.Tensor
    retain_test: torch.Tensor
    description: str
    forgotten_classes: list[int]
    # Copied from the spec's ``modifies_training_data`` (forget=style): the original model is then
    # trained on ``x_train``/``y_train``, which such a spec fills, instead of the dataset's tensors,
    # and its cache key includes the forget section.
    modifies_training_data: bool = False
    x_train: torch.Tensor | None = None
    y_train: torch.Tensor | None = None
    style: Callable[[torch.Tensor], torch.Tensor] | None = None  # the transform, to build the stylized test set
    relabel_to: int | None = None  # the label stylized training images carry, when relabelled


class ForgetSpec(ABC):
    """One way of choosing D_f, built with no arguments; the ``forget`` section is passed to each call."""

    # True when the split changes the training data (stylized images): the original model then
    # depends on the forget section, which the model cache reads before any split exists.
    modifies_training_data: ClassVar[bool] = False

    @abstractmethod
    def split(self, cfg: DictConfig, data: ImageData) -> ForgetSplit:
        """D_f and D_r of ``data`` (and their test subsets); raises :class:`FamrError` for a bad section."""

    def check(self, cfg: DictConfig, shape: DatasetShape) -> None:
        """Raise :class:`FamrError` for what is wrong with ``cfg`` given the dataset's shape alone."""


FORGET_SPECS: Registry[type[ForgetSpec]] = Registry("forget spec", "forget=<name>", base=ForgetSpec)


def modifies_training_data(cfg: DictConfig) -> bool:
    """Whether the forget spec ``cfg`` (the ``forget`` section) changes the data the original model trains on."""
    name = str(cfg.get("name"))
    return name in FORGET_SPECS and FORGET_SPECS.get(name).modifies_training_data


def check_forget_config(cfg: DictConfig, shape: DatasetShape) -> None:
    """Reject a bad ``forget`` section from the dataset's classes and channels alone, before any data is decoded.

    The split itself (:func:`make_forget_split`) repeats these checks and adds those that need the
    data, such as a fraction that rounds to no sample at all.
    """
    FORGET_SPECS.get(str(cfg.get("name")))().check(cfg, shape)


def make_forget_split(cfg: DictConfig, data: ImageData) -> ForgetSplit:
    spec = FORGET_SPECS.get(cfg.name)()
    split = spec.split(cfg, data)
    # The class attribute decides, so the split can never disagree with the model cache key.
    split.modifies_training_data = spec.modifies_training_data
    return split


import_submodules(__name__, __path__)
