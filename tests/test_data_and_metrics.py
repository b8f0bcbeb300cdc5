"""Data split, on-device batches and the metric functions."""

from __future__ import annotations

import pytest
import torch

from conftest import compose_config
from famr_cli.augment import random_crop
from famr_cli.batches import TensorBatches
from famr_cli.dataset import load_dataset
from famr_cli.errors import FamrError
from famr_cli.evaluate.metrics import accuracy, parameter_distance, per_class_accuracy
from famr_cli.forget import make_forget_split


def test_digits_split_is_stratified_and_independent_of_the_run_seed(tmp_path):
    a = load_dataset(compose_config().dataset, tmp_path)
    b = load_dataset(compose_config(["seed=7"]).dataset, tmp_path)
    assert a.x_train.dtype == torch.uint8 and a.x_train.shape[1:] == (1, 8, 8)
    assert len(a.y_train) + len(a.y_test) == 1797
    assert torch.equal(a.y_test, b.y_test)
    assert torch.bincount(a.y_test).min() >= 35


def test_class_split_partitions_train_and_test(tmp_path):
    cfg = compose_config(["forget.classes=[1,7]"])
    data = load_dataset(cfg.dataset, tmp_path)
    split = make_forget_split(cfg.forget, data)
    assert split.forgotten_classes == [1, 7]
    assert set(data.y_train[split.forget_train].tolist()) == {1, 7}
    assert not set(data.y_train[split.retain_train].tolist()) & {1, 7}
    assert len(split.forget_train) + len(split.retain_train) == len(data.y_train)
    assert len(split.forget_test) + len(split.retain_test) == len(data.y_test)


def test_classes_can_be_named(tmp_path):
    cfg = compose_config(["forget.classes=['3']"])
    data = load_dataset(cfg.dataset, tmp_path)
    assert make_forget_split(cfg.forget, data).forgotten_classes == [3]


@pytest.mark.parametrize(
    "classes, message",
    [
        ("[10]", "class id 10"),
        ("[]", "empty"),
        ("[0,1,2,3,4,5,6,7,8,9]", "every class"),
        ("[cat]", "Unknown class 'cat'"),
        ("[2,2]", "twice"),
    ],
)
def test_bad_forget_classes_are_rejected(classes, message, tmp_path):
    cfg = compose_config([f"forget.classes={classes}"])
    with pytest.raises(FamrError, match=message):
        make_forget_split(cfg.forget, load_dataset(cfg.dataset, tmp_path))


def test_batches_cover_every_sample_once_per_epoch_in_seeded_order():
    x = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    y = torch.arange(10)
    batches = TensorBatches(x, y, batch_size=4, mean=(0.0,), std=(1 / 255,), device=torch.device("cpu"), shuffle=True, seed=3)
    seen = torch.cat([yb for _, yb in batches])
    assert sorted(seen.tolist()) == list(range(10))
    again = TensorBatches(x, y, batch_size=4, mean=(0.0,), std=(1 / 255,), device=torch.device("cpu"), shuffle=True, seed=3)
    assert torch.equal(seen, torch.cat([yb for _, yb in again]))
    # normalisation with mean 0, std 1/255 returns the raw pixel values
    xb, yb = next(iter(TensorBatches(x, y, batch_size=10, mean=(0.0,), std=(1 / 255,), device=torch.device("cpu"))))
    assert torch.allclose(xb[:, 0, 0, 0], yb.float())


def test_random_crop_shifts_within_the_padding():
    x = torch.zeros(64, 1, 5, 5)
    x[:, :, 2, 2] = 1.0
    g = torch.Generator().manual_seed(0)
    out = random_crop(x, 1, g)
    assert out.shape == x.shape
    rows, cols = out[:, 0].nonzero()[:, 1], out[:, 0].nonzero()[:, 2]
    assert set(rows.tolist()) <= {1, 2, 3} and set(cols.tolist()) <= {1, 2, 3}
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 1  # actually random, not a fixed shift


def test_accuracy_metrics():
    pred = torch.tensor([0, 1, 1, 2, 2, 2])
    target = torch.tensor([0, 1, 2, 2, 2, 0])
    assert accuracy(pred, target) == pytest.approx(400 / 6)
    per_class = per_class_accuracy(pred, target, 4)
    assert per_class[:3] == pytest.approx([50.0, 100.0, 200 / 3])
    assert per_class[3] != per_class[3]  # NaN for a class with no samples
    assert accuracy(pred[:0], target[:0]) != accuracy(pred[:0], target[:0])


def test_parameter_distance_is_the_global_l2_norm():
    a = [torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])]
    b = [torch.zeros(2), torch.zeros(1, 1)]
    assert parameter_distance(a, b) == pytest.approx(5.0)
