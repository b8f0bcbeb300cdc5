"""The fast CIFAR recipes' augmentations: reflect padding for crops and Cutout."""

from __future__ import annotations

import torch

from famr_cli.augment import Augment, _reflect_pad, random_crop, random_cutout
from famr_cli.batches import TensorBatches
from famr_cli.train.settings import TrainSettings, augment_settings


def test_reflect_padding_mirrors_the_border_without_repeating_it():
    x = torch.arange(4, dtype=torch.uint8).view(1, 1, 1, 4).expand(1, 1, 4, 4).contiguous()
    padded = _reflect_pad(x, 2)
    assert padded.dtype == torch.uint8 and padded.shape[-2:] == (8, 8)
    assert padded[0, 0, 0].tolist() == [2, 1, 0, 1, 2, 3, 2, 1]  # numpy/PyTorch "reflect"
    assert torch.equal(padded.float(), torch.nn.functional.pad(x.float(), (2, 2, 2, 2), mode="reflect"))


def test_reflect_crops_never_show_the_zero_border():
    x = torch.full((64, 3, 8, 8), 200, dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    assert (random_crop(x, 4, g, "reflect") == 200).all()
    assert (random_crop(x, 4, torch.Generator().manual_seed(0), "zeros") == 0).any()


def test_cutout_zeroes_one_square_of_the_given_side_per_image_clipped_at_the_border():
    x = torch.ones(500, 3, 16, 16)
    out = random_cutout(x, 6, torch.Generator().manual_seed(0))
    zeroed = (out == 0).all(dim=1).flatten(1).sum(1)  # every channel of a zeroed pixel is 0
    assert zeroed.max() == 36 and zeroed.min() >= 9  # a full 6x6 square, or a corner clipped to 3x3
    assert ((out == 0) | (out == 1)).all() and (out == 0).any(dim=1).equal((out == 0).all(dim=1))


def test_batches_apply_cutout_after_normalisation_and_augment_reads_old_recipes():
    x = torch.full((32, 3, 8, 8), 255, dtype=torch.uint8)
    batches = TensorBatches(
        x,
        torch.zeros(32, dtype=torch.long),
        batch_size=32,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        device=torch.device("cpu"),
        augment=Augment(cutout=4),
    )
    xb, _ = next(iter(batches))
    assert set(xb.unique().tolist()) == {0.0, 2.0}  # (1 - 0.5) / 0.25 outside the square, the mean (0) inside
    section = {"crop_padding": 4, "hflip": True, "padding_mode": "reflect", "cutout": 2}
    assert augment_settings(section) == Augment(4, True, "reflect", 2)


def test_bad_augment_values_are_one_sentence():
    import pytest
    from omegaconf import OmegaConf

    from conftest import compose_config
    from famr_cli.errors import FamrError

    train = OmegaConf.to_container(compose_config([]).train, resolve=True)
    for key, value, fragment in (
        ("padding_mode", "circular", "Unknown train.augment.padding_mode"),
        ("cutout", -1, "train.augment.cutout"),
    ):
        bad = OmegaConf.create({**train, "augment": {**train["augment"], key: value}})
        with pytest.raises(FamrError, match=fragment):
            TrainSettings.from_config(bad)
