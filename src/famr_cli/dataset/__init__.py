"""Datasets: each one turns its config into an in-memory :class:`ImageData` of uint8 tensors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_chans(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def img_size(self) -> int:
        return int(self.x_train.shape[-1])


DatasetLoader = Callable[[DictConfig], ImageData]
DATASETS: Registry[DatasetLoader] = Registry("dataset", "dataset=<name>")


def load_dataset(cfg: DictConfig) -> ImageData:
    return DATASETS.get(cfg.name)(cfg)


# Importing the modules registers them.
from famr_cli.dataset import digits  # noqa: E402,F401
