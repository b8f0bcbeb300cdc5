"""Datasets: each one turns its config into an :class:`ImageData` of uint8 tensors.

Adding a dataset: write ``famr_cli/dataset/<name>.py`` with one subclass of :class:`Dataset`
decorated by ``@DATASETS.register("<name>")``, and ``conf/dataset/<name>.yaml`` with
``name: <name>`` and the section's keys. The class implements both methods:

- ``describe(cfg)`` checks the section's values and paths and returns its :class:`DatasetShape`
  (classes, channels, image size) without decoding anything, so that a bad config, forget spec or
  backbone fails in seconds, before any work;
- ``load(cfg, cache_root)`` returns the decoded :class:`ImageData`; ``cache_root`` is where it may
  keep decoded tensors (see ``famr_cli.dataset.decoded``).

Every module in this package is imported at start-up (:func:`famr_cli.registry.import_submodules`),
so nothing else needs editing; modules that register nothing (``decoded``, ``image_folder``, ...)
hold shared helpers. Row selection (``dataset.train_per_class``, ``dataset.val_per_class``) applies
to every dataset in :func:`load_dataset`, so a dataset never handles it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from famr_cli.registry import Registry, import_submodules


@dataclass
class ImageData:
    """Decoded images as uint8 NCHW tensors plus what a model and an evaluation need to know."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # Where the tensors came from (source, decode-cache key and hit, load time) for results.json.
    provenance: dict[str, Any] = field(default_factory=dict)
    # True when x_train/x_test are backed by memory-mapped files: batches are then streamed through a
    # DataLoader (``batches.make_batches``) instead of being copied to the device whole.
    streamed: bool = False
    # When set, images are stored larger than the model sees them: training takes random crops of
    # this size and evaluation centre crops of it.
    crop_size: int | None = None
    # DataLoader worker processes for streamed batches (0 = read in the main process).
    num_workers: int = 0
    # Training images held out from every training (dataset.val_per_class): tuning scores on them.
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_chans(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def img_size(self) -> int:
        """The side length the model sees: the crop size when set, else the stored size."""
        return int(self.crop_size) if self.crop_size is not None else int(self.x_train.shape[-1])


@dataclass(frozen=True)
class DatasetShape:
    """What a dataset's config alone says about its data, known before anything is decoded."""

    class_names: list[str]
    in_chans: int
    img_size: int  # the side length the model sees (``ImageData.img_size``)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class Dataset(ABC):
    """One dataset, built with no arguments; its config section is passed to each call."""

    @abstractmethod
    def describe(self, cfg: DictConfig) -> DatasetShape:
        """The classes, channels and image size ``cfg`` gives, after checking its values and paths;
        raises :class:`FamrError` for bad ones. Decodes nothing."""

    @abstractmethod
    def load(self, cfg: DictConfig, cache_root: Path) -> ImageData:
        """Every training and test image of ``cfg``; ``cache_root`` holds decoded tensors."""


DATASETS: Registry[type[Dataset]] = Registry("dataset", "dataset=<name>", base=Dataset)


def load_dataset(cfg: DictConfig, cache_root: Path) -> ImageData:
    selection = RowSelection.from_config(cfg)
    return select_rows(DATASETS.get(cfg.name)().load(cfg, Path(cache_root)), selection)


def describe_dataset(cfg: DictConfig) -> DatasetShape:
    """The dataset's classes, channels and image size from its config, after checking the section's values
    and paths; raises :class:`FamrError` for bad ones."""
    dataset = DATASETS.get(cfg.name)()  # an unknown name fails here, naming the choices
    RowSelection.from_config(cfg)
    return dataset.describe(cfg)


def channel_stats(x_uint8: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units, without a full float copy."""
    flat = x_uint8.transpose(0, 1).reshape(x_uint8.shape[1], -1)
    mean, sq = [], []
    for channel in flat:
        values = channel.double().div_(255.0)
        mean.append(float(values.mean()))
        sq.append(float(values.square().mean()))
    std = tuple((s - m * m) ** 0.5 for m, s in zip(mean, sq))
    return tuple(mean), std


from famr_cli.dataset.subsets import RowSelection, select_rows  # noqa: E402

import_submodules(__name__, __path__)
