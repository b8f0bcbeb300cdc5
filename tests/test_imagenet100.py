"""dataset=imagenet100 on a tiny generated ImageNet tree: decode-once cache, errors, streamed batches, pipeline."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from conftest import compose_config
from famr_cli.augment import Augment
from famr_cli.batches import StreamedBatches, TensorBatches, make_batches
from famr_cli.cli import CONFIG_DIR
from famr_cli.dataset import imagenet100, load_dataset
from famr_cli.errors import FamrError

SHIPPED = [str(c) for c in OmegaConf.load(Path(CONFIG_DIR) / "dataset" / "imagenet100.yaml").classes]
WNIDS = SHIPPED[:3]  # not in sorted order, so class ids must follow the list, not the file system
# The shared data folder, by environment variable or beside the checkout; the comparison is skipped without it.
SHARED_LIST = Path(os.environ.get("FAMR_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "imagenet100_classes.txt"
SIZES = [(50, 40), (37, 61), (64, 64), (45, 80), (90, 33)]  # (width, height): landscape, portrait, square
N_TRAIN, N_VAL = 5, 2


def _image(label: int, size: tuple[int, int], index: int) -> Image.Image:
    """A noisy image whose channel ``label`` dominates, so labels can be read back from pixels."""
    rng = np.random.default_rng(100 * label + index)
    pixels = rng.integers(20, 60, size=(size[1], size[0], 3), dtype=np.uint8)
    pixels[..., label] = 200 + index * 5
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imagenet")
    for label, wnid in enumerate(WNIDS):
        for split, count in (("train", N_TRAIN), ("val", N_VAL)):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                img = _image(label, SIZES[(i + label) % len(SIZES)], i)
                if i == 3:
                    img.convert("RGBA").save(folder / f"{wnid}_{i:03d}.png")
                else:
                    img.save(folder / f"{wnid}_{i:03d}.JPEG", quality=95)
            (folder / "README.txt").write_text("not an image")
        # A grayscale JPEG as the last val image of each class (ImageNet has some).
        _image(label, (48, 40), 9).convert("L").save(root / "val" / wnid / f"{wnid}_999.JPEG")
    return root


def _cfg(root: Path, cache: Path, *extra: str):
    overrides = [
        "dataset=imagenet100",
        f"dataset.root={root}",
        f"dataset.classes=[{','.join(WNIDS)}]",
        "dataset.img_size=32",
        "dataset.store_size=40",
        "dataset.num_workers=0",
        f"cache_dir={cache}",
        *extra,
    ]
    return compose_config(overrides)


def _load(root: Path, cache: Path, *extra: str):
    return load_dataset(_cfg(root, cache, *extra).dataset, cache)


def test_decodes_to_uint8_store_size_with_list_order_labels(tree, tmp_path):
    data = _load(tree, tmp_path)
    assert data.x_train.shape == (3 * N_TRAIN, 3, 40, 40) and data.x_train.dtype == torch.uint8
    assert data.x_test.shape == (3 * (N_VAL + 1), 3, 40, 40) and data.x_test.dtype == torch.uint8
    assert data.y_train.dtype == torch.int64 and data.y_test.dtype == torch.int64
    assert data.y_train.tolist() == [0] * N_TRAIN + [1] * N_TRAIN + [2] * N_TRAIN
    assert data.y_test.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    assert data.class_names == WNIDS and WNIDS != sorted(WNIDS)
    assert data.streamed and data.crop_size == 32 and data.img_size == 32 and data.in_chans == 3
    assert data.mean == (0.485, 0.456, 0.406) and data.std == (0.229, 0.224, 0.225)
    # Pixels carry the label: channel k dominates class k's images (so class order = list order).
    for k in range(3):
        assert int(data.x_train[data.y_train == k].float().mean(dim=(0, 2, 3)).argmax()) == k
    prov = data.provenance
    assert prov["source"] == str(tree.resolve()) and prov["decode_cache"]["hit"] is False
    entry = Path(prov["decode_cache"]["path"])
    assert sorted(p.name for p in entry.iterdir()) == ["meta.json", "x_test.npy", "x_train.npy", "y_test.npy", "y_train.npy"]
    # No staging folder left behind (the entry's lock file stays: it is how parallel jobs wait).
    assert [p.name for p in entry.parent.iterdir() if not p.name.endswith(".lock")] == [entry.name]


def test_decode_resizes_the_short_side_then_centre_crops(tmp_path):
    pixels = np.zeros((40, 80, 3), dtype=np.uint8)  # 80 wide, 40 high: red | green (middle 40 px) | blue
    pixels[:, :20, 0] = 255
    pixels[:, 20:60, 1] = 255
    pixels[:, 60:, 2] = 255
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    out = imagenet100.decode_square(tmp_path / "wide.png", 20)
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8
    assert out[:, 1:-1, 1].min() >= 250 and out[:, 1:-1, [0, 2]].max() <= 5
    with pytest.raises(FamrError, match="Cannot decode"):
        (tmp_path / "broken.JPEG").write_bytes(b"not a jpeg")
        imagenet100.decode_square(tmp_path / "broken.JPEG", 20)


@pytest.mark.slow
def test_second_load_reuses_the_decode_cache_without_decoding(tree, tmp_path, monkeypatch):
    first = _load(tree, tmp_path)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the cache holds this dataset")

    with monkeypatch.context() as patch:
        patch.setattr(imagenet100, "decode_square", no_decoding)
        second = _load(tree, tmp_path)
    assert second.provenance["decode_cache"]["hit"] is True
    assert second.provenance["decode_cache"]["key"] == first.provenance["decode_cache"]["key"]
    assert torch.equal(first.x_train, second.x_train) and torch.equal(first.y_test, second.y_test)
    # Training size and worker count do not change the decoded cache; the stored size does.
    assert _load(tree, tmp_path, "dataset.img_size=24", "dataset.num_workers=2").provenance["decode_cache"]["hit"] is True
    assert _load(tree, tmp_path, "dataset.store_size=36").provenance["decode_cache"]["hit"] is False
    # A truncated entry is detected and rebuilt.
    x_file = Path(second.provenance["decode_cache"]["path"]) / "x_train.npy"
    del first, second
    x_file.write_bytes(x_file.read_bytes()[:1000])
    rebuilt = _load(tree, tmp_path)
    assert rebuilt.provenance["decode_cache"]["hit"] is False and rebuilt.x_train.shape == (3 * N_TRAIN, 3, 40, 40)


def test_fraction_takes_the_first_files_of_each_class(tree, tmp_path):
    full = _load(tree, tmp_path)
    half = _load(tree, tmp_path, "dataset.fraction=0.5")
    per_train, per_val = math.ceil(0.5 * N_TRAIN), math.ceil(0.5 * (N_VAL + 1))
    assert half.y_train.tolist() == [0] * per_train + [1] * per_train + [2] * per_train
    assert len(half.y_test) == 3 * per_val
    for k in range(3):
        assert torch.equal(half.x_train[half.y_train == k], full.x_train[full.y_train == k][:per_train])
        assert torch.equal(half.x_test[half.y_test == k], full.x_test[full.y_test == k][:per_val])
    assert half.provenance["decode_cache"]["key"] != full.provenance["decode_cache"]["key"]


def test_store_size_defaults_to_256_over_224_of_img_size(tree, tmp_path):
    data = _load(tree, tmp_path, "dataset.store_size=null")
    assert data.x_train.shape[-1] == round(32 * 256 / 224) == 37 and data.img_size == 32


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("dataset.fraction=0", "dataset.fraction must be in"),
        ("dataset.fraction=1.5", "dataset.fraction must be in"),
        ("dataset.img_size=48", "smaller than dataset.img_size"),
        ("dataset.classes=[]", "dataset.classes is empty"),
        (f"dataset.classes=[{WNIDS[0]},{WNIDS[0]}]", "more than once"),
    ],
)
def test_bad_settings_fail_with_one_sentence(tree, tmp_path, override, message):
    with pytest.raises(FamrError, match=message):
        _load(tree, tmp_path, override)


def test_missing_wnid_folders_are_named(tree, tmp_path):
    missing = SHIPPED[3:15]
    with pytest.raises(FamrError) as err:
        _load(tree, tmp_path, f"dataset.classes=[{','.join(WNIDS + missing)}]")
    text = str(err.value)
    assert "lacks 12 of the 15 class folders" in text and str(tree / "train") in text
    assert all(w in text for w in missing[:10]) and missing[10] not in text and "..." in text
    assert not any(w in text for w in WNIDS)


def test_missing_root_and_split_errors(tree, tmp_path, monkeypatch):
    monkeypatch.delenv("FAMR_IMAGENET_ROOT", raising=False)
    with pytest.raises(FamrError, match="FAMR_IMAGENET_ROOT"):
        _load(tree, tmp_path, "dataset.root=null")
    with pytest.raises(FamrError, match="does not exist"):
        _load(tmp_path / "nowhere", tmp_path)
    (tmp_path / "partial" / "train").mkdir(parents=True)
    with pytest.raises(FamrError, match="has no val/ folder"):
        _load(tmp_path / "partial", tmp_path)


def test_shipped_class_list_is_the_100_class_subset():
    assert len(SHIPPED) == 100 and len(set(SHIPPED)) == 100
    assert all(w.startswith("n") and len(w) == 9 for w in SHIPPED)
    if SHARED_LIST.is_file():
        assert SHIPPED == SHARED_LIST.read_text().split()


def _streamed(data, workers: int, seed: int = 0, **kwargs) -> StreamedBatches:
    data = dataclasses.replace(data, num_workers=workers)
    n = len(data.y_train)
    batches = make_batches(data, data.x_train, torch.arange(n), batch_size=4, device=torch.device("cpu"), seed=seed, train=True, **kwargs)
    assert isinstance(batches, StreamedBatches)
    return batches


def _epoch(batches) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*list(batches))
    return torch.cat(xs), torch.cat(ys)


def test_streamed_evaluation_is_the_normalised_centre_crop(tree, tmp_path):
    data = _load(tree, tmp_path)
    n = len(data.y_test)
    batches = make_batches(data, data.x_test, torch.arange(n), batch_size=4, device=torch.device("cpu"), train=False)
    assert isinstance(batches, StreamedBatches) and len(batches) == math.ceil(n / 4)
    shapes = [tuple(x.shape) for x, _ in batches]
    assert shapes == [(4, 3, 32, 32), (4, 3, 32, 32), (1, 3, 32, 32)]
    x, y = _epoch(batches)
    assert x.dtype == torch.float32 and y.tolist() == list(range(n))
    mean, std = torch.tensor(data.mean).view(1, 3, 1, 1), torch.tensor(data.std).view(1, 3, 1, 1)
    expected = (data.x_test[:, :, 4:36, 4:36].float() / 255 - mean) / std
    assert torch.allclose(x, expected, atol=1e-6)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.slow
def test_streamed_training_covers_each_sample_once_and_is_reproducible(tree, tmp_path, workers):
    data = _load(tree, tmp_path)
    n = len(data.y_train)
    augment = Augment(crop_padding=1, hflip=True)
    batches = _streamed(data, workers, shuffle=True, augment=augment)
    epochs = [_epoch(batches) for _ in range(2)]
    for x, y in epochs:
        assert x.shape == (n, 3, 32, 32) and x.dtype == torch.float32
        assert sorted(y.tolist()) == list(range(n))  # every sample exactly once per epoch
        lo = ((0 - torch.tensor(data.mean)) / torch.tensor(data.std)).view(1, 3, 1, 1)
        hi = ((1 - torch.tensor(data.mean)) / torch.tensor(data.std)).view(1, 3, 1, 1)
        assert bool(((x >= lo - 1e-5) & (x <= hi + 1e-5)).all())
    assert not torch.equal(epochs[0][1], epochs[1][1])  # reseeded per epoch: a new order
    again = _streamed(data, workers, shuffle=True, augment=augment)
    for x, y in epochs:
        x2, y2 = _epoch(again)
        assert torch.equal(y, y2) and torch.equal(x, x2)
    other = _epoch(_streamed(data, workers, seed=1, shuffle=True, augment=augment))
    assert not torch.equal(other[0], epochs[0][0])
    # The worker count never changes what a seed yields.
    in_main = _epoch(_streamed(data, 0, shuffle=True, augment=augment))
    assert torch.equal(in_main[0], epochs[0][0]) and torch.equal(in_main[1], epochs[0][1])


def test_streamed_without_augmentation_centre_crops_and_honours_indices(tree, tmp_path):
    data = _load(tree, tmp_path)
    subset = torch.tensor([1, 7, 8, 13])
    x, y = _epoch(_streamed(data, 0, shuffle=True, indices=subset))  # FAMR's call: train=True, no augment
    assert sorted(y.tolist()) == subset.tolist()
    mean, std = torch.tensor(data.mean).view(1, 3, 1, 1), torch.tensor(data.std).view(1, 3, 1, 1)
    assert torch.allclose(x, (data.x_train[y][:, :, 4:36, 4:36].float() / 255 - mean) / std, atol=1e-6)


def test_in_memory_data_still_gets_tensor_batches(tmp_path):
    data = load_dataset(compose_config().dataset, tmp_path)
    batches = make_batches(data, data.x_train, data.y_train, batch_size=64, device=torch.device("cpu"), train=True)
    assert isinstance(batches, TensorBatches) and not data.streamed and data.img_size == 8


@pytest.mark.slow
def test_pipeline_trains_unlearns_and_evaluates_on_the_tiny_tree(tree, tmp_path):
    from famr_cli.evaluate.model_eval import evaluate_model
    from famr_cli.logger import ExperimentLogger
    from famr_cli.method import UnlearnContext
    from famr_cli.model_store import get_original_model
    from famr_cli.pipeline import unlearn
    from famr_cli.prepared import prepare

    cfg = _cfg(
        tree,
        tmp_path,
        "backbone=resnet_mini",
        "train.epochs=1",
        "train.batch_size=4",
        "method.epochs=2",
        "forget.classes=[0]",
        "device=cpu",
        "progress=false",
    )
    p = prepare(cfg)
    assert p.data.streamed and len(p.split.forget_train) == N_TRAIN
    original = get_original_model(cfg, p, ExperimentLogger(), False)
    assert original.hit is False
    model, report, _ = unlearn(p.method, original.model, UnlearnContext(p.data, p.split, p.device, 0))
    assert len(report.epoch_losses) == 2 and all(math.isfinite(v) for v in report.epoch_losses)
    metrics = evaluate_model(model, p.data, p.split, p.device, 8)
    assert 0.0 <= metrics["test_acc"] <= 100.0 and len(metrics["per_class_test_acc"]) == 3
    again = get_original_model(cfg, prepare(cfg), ExperimentLogger(), False)
    assert again.hit is True
