"""Datasets: each one turns its config into an in-memory :class:`ImageData` of uint8 tensors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from famr_cli.registry import Registry


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


# loader(dataset config, cache root) -> ImageData; the cache root holds decoded tensors.
DatasetLoader = Callable[[DictConfig, Path], ImageData]
DATASETS: Registry[DatasetLoader] = Registry("dataset", "dataset=<name>")
# describer(dataset config) -> DatasetShape: checks the section (settings, paths) without decoding anything.
DatasetDescriber = Callable[[DictConfig], DatasetShape]
DESCRIBERS: dict[str, DatasetDescriber] = {}


def load_dataset(cfg: DictConfig, cache_root: Path) -> ImageData:
    selection = RowSelection.from_config(cfg)
    return select_rows(DATASETS.get(cfg.name)(cfg, Path(cache_root)), selection)


def describe_dataset(cfg: DictConfig) -> DatasetShape | None:
    """The dataset's classes, channels and image size from its config, after checking the section's values
    and paths; raises :class:`FamrError` for bad ones. None for a dataset that registered no describer."""
    DATASETS.get(cfg.name)  # an unknown name fails here, naming the choices
    RowSelection.from_config(cfg)
    describe = DESCRIBERS.get(cfg.name)
    return None if describe is None else describe(cfg)


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


# Importing the modules registers them.
from famr_cli.dataset import cifar10, digits, imagenet100  # noqa: E402,F401
from famr_cli.dataset.subsets import RowSelection, select_rows  # noqa: E402
