"""scikit-learn's bundled 8x8 handwritten digits (1,797 real images, shipped with sklearn)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from famr_cli.checks import number, whole
from famr_cli.dataset import DATASETS, Dataset, DatasetShape, ImageData
from famr_cli.errors import FamrError

CLASSES = [str(i) for i in range(10)]
SIDE = 8


@DATASETS.register("digits")
class Digits(Dataset):
    def describe(self, cfg: DictConfig) -> DatasetShape:
        if not 0.0 < number(cfg.test_fraction, "dataset.test_fraction", 0.2) < 1.0:
            raise FamrError(f"dataset.test_fraction must lie in (0, 1) (got {cfg.test_fraction}); try dataset.test_fraction=0.2.")
        whole(cfg.split_seed, "dataset.split_seed", 0, minimum=0)
        return DatasetShape(list(CLASSES), in_chans=1, img_size=SIDE)

    def load(self, cfg: DictConfig, cache_root: Path) -> ImageData:
        # Decoding 1,797 bundled arrays takes milliseconds: no decode cache needed.
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        self.describe(cfg)
        bunch = load_digits()
        # Pixel values are 0..16; scale to the 0..255 uint8 range every other dataset uses.
        images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
        labels = bunch.target.astype(np.int64)
        # The split depends on split_seed alone, so no training or forget seed can move a sample
        # between train and test.
        x_tr, x_te, y_tr, y_te = train_test_split(images, labels, test_size=cfg.test_fraction, random_state=cfg.split_seed, stratify=labels)
        x_train = torch.from_numpy(x_tr)
        mean = float(x_train.float().div(255).mean())
        std = float(x_train.float().div(255).std())
        return ImageData(
            x_train=x_train,
            y_train=torch.from_numpy(y_tr),
            x_test=torch.from_numpy(x_te),
            y_test=torch.from_numpy(y_te),
            class_names=list(CLASSES),
            mean=(mean,),
            std=(std,),
            provenance={"source": "sklearn.datasets.load_digits"},
        )
