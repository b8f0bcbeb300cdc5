"""The CIFAR-10 loader on tiny generated copies: image folder, .tar.gz, torchvision batches, download, errors, decode cache."""

from __future__ import annotations

import pickle
import shutil
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import famr_cli.dataset.cifar10 as cifar10_mod
from conftest import compose_config
from famr_cli.dataset import load_dataset
from famr_cli.errors import FamrError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# Classes whose third train image is a solid colour of another size, to check the resize to img_size.
ODD_SIZE = {"airplane": (40, 24), "ship": (48, 48)}


def cifar_cfg(root, *extra: str):
    return compose_config(["dataset=cifar10", f"dataset.root={root}", *extra]).dataset


def _save(path: Path, pixels: np.ndarray) -> np.ndarray:
    """Write ``pixels`` (H x W x 3) and return what a decoder reads back (exact for PNG; PIL's own decode for JPEG)."""
    Image.fromarray(pixels).save(path)
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def make_cifar_folder(root: Path, seed: int = 0) -> dict:
    """``root/{train,test}/<class>/`` with 3 train + 2 test images per class; returns the expected 32x32 tensors.

    Per class: ``a.png`` (random, exact round trip), ``b.jpg`` / ``B.JPEG`` (random JPEG), and in train ``c.png``:
    random 32x32, or a solid colour of another size for the classes in ODD_SIZE. A stray text file must be ignored.
    """
    rng = np.random.default_rng(seed)
    expected = {}
    for split, names in (("train", ["a.png", "b.jpg", "c.png"]), ("test", ["a.png", "B.JPEG"])):
        xs, ys, exact = [], [], []
        for label, name in reversed(list(enumerate(CLASSES))):  # created out of order on purpose
            class_dir = root / split / name
            class_dir.mkdir(parents=True)
            (class_dir / "notes.txt").write_text("not an image")
            per_class = []
            for file in names:
                if split == "train" and file == "c.png" and name in ODD_SIZE:
                    w, h = ODD_SIZE[name]
                    colour = rng.integers(0, 256, 3, dtype=np.uint8)
                    _save(class_dir / file, np.broadcast_to(colour, (h, w, 3)).copy())
                    per_class.append((file, np.broadcast_to(colour, (32, 32, 3)), False))
                else:
                    decoded = _save(class_dir / file, rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
                    per_class.append((file, decoded, True))
            for _file, pixels, is_exact in sorted(per_class, key=lambda t: t[0]):  # the loader reads files in sorted order
                xs.append(pixels)
                ys.append(label)
                exact.append(is_exact)
        order = np.argsort(ys, kind="stable")  # class order, then file order
        x = torch.from_numpy(np.stack(xs)[order]).permute(0, 3, 1, 2).contiguous()
        expected[split] = (x, torch.tensor(ys)[order], torch.tensor(exact)[order])
    return expected


@pytest.fixture(scope="module")
def cifar_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar-folder")
    return root, make_cifar_folder(root)


@pytest.fixture(scope="module")
def cifar_archive(tmp_path_factory, cifar_folder):
    folder, expected = cifar_folder
    archive = tmp_path_factory.mktemp("cifar-archive") / "cifar10-jpeg.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar10-jpeg")  # a top-level folder inside, like the published archive
    return archive, expected


def assert_matches(data, expected: dict) -> None:
    for split in ("train", "test"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        want_x, want_y, exact = expected[split]
        assert x.dtype == torch.uint8 and x.shape == want_x.shape, split
        assert y.dtype == torch.long and torch.equal(y, want_y), split
        assert torch.equal(x[exact], want_x[exact]), f"{split}: PNG/JPEG pixels must round-trip exactly"
        # Solid colours resized to 32x32 stay that colour (bilinear rounding may move a value by one).
        assert (x[~exact].int() - want_x[~exact].int()).abs().le(1).all(), split


def assert_stats(data) -> None:
    x = data.x_train.double() / 255.0
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(torch.tensor(data.mean, dtype=torch.double), mean, atol=1e-9)
    assert torch.allclose(torch.tensor(data.std, dtype=torch.double), std, atol=1e-9)


def entries(cache_root: Path) -> list[Path]:
    base = cache_root / "data" / "cifar10"
    return sorted(p for p in base.iterdir() if not p.name.startswith(".")) if base.is_dir() else []


# --- 1. image folder -------------------------------------------------------------------------------------------------


def test_image_folder_loads_in_cifar_label_order(cifar_folder, tmp_path):
    folder, expected = cifar_folder
    data = load_dataset(cifar_cfg(folder), tmp_path / "cache")
    assert data.class_names == CLASSES
    assert data.num_classes == 10 and data.in_chans == 3 and data.img_size == 32
    assert data.x_train.shape == (30, 3, 32, 32) and data.x_test.shape == (20, 3, 32, 32)
    assert data.y_train.tolist() == [c for c in range(10) for _ in range(3)]
    assert data.y_test.tolist() == [c for c in range(10) for _ in range(2)]
    assert_matches(data, expected)
    assert_stats(data)
    assert data.provenance["format"] == "folder"
    assert data.provenance["decode_cache"]["hit"] is False


def test_image_folder_one_level_down_is_found(cifar_folder, tmp_path):
    """dataset.root may be the folder that holds the layout folder (as an unpacked archive leaves it)."""
    folder, expected = cifar_folder
    outer = tmp_path / "outer"
    shutil.copytree(folder, outer / "cifar10-jpeg")
    assert_matches(load_dataset(cifar_cfg(outer), tmp_path / "cache"), expected)


def test_image_folder_second_load_hits_the_decode_cache(cifar_folder, tmp_path, monkeypatch):
    folder, expected = cifar_folder
    cache = tmp_path / "cache"
    first = load_dataset(cifar_cfg(folder), cache)

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded again despite a cached entry")

    monkeypatch.setattr(cifar10_mod, "_from_folder", no_decode)
    monkeypatch.setattr(cifar10_mod, "decode_split", no_decode)
    second = load_dataset(cifar_cfg(folder), cache)
    assert second.provenance["decode_cache"]["hit"] is True
    assert second.provenance["decode_cache"]["key"] == first.provenance["decode_cache"]["key"]
    assert second.class_names == CLASSES and second.mean == pytest.approx(first.mean) and second.std == pytest.approx(first.std)
    assert_matches(second, expected)


# --- 2. .tar.gz and the decode cache --------------------------------------------------------------------------------


@pytest.mark.slow
def test_archive_gives_the_same_tensors_and_is_cached_per_size(cifar_archive, tmp_path, monkeypatch):
    archive, expected = cifar_archive
    cache = tmp_path / "cache"
    first = load_dataset(cifar_cfg(archive), cache)
    assert first.provenance["format"] == "archive" and first.provenance["source"] == str(archive.resolve())
    assert first.provenance["decode_cache"]["hit"] is False
    assert first.class_names == CLASSES
    assert_matches(first, expected)
    assert_stats(first)
    assert not [p for p in cache.rglob("*") if p.suffix in (".png", ".jpg")], "the images are read from the archive, never unpacked"
    assert len(entries(cache)) == 1

    calls = []
    real_from_archive = cifar10_mod._from_archive

    def counting(archive, size):
        calls.append(size)
        if size == 32:
            raise AssertionError("decoded again despite a cached entry")
        return real_from_archive(archive, size)

    monkeypatch.setattr(cifar10_mod, "_from_archive", counting)
    second = load_dataset(cifar_cfg(archive), cache)
    assert second.provenance["decode_cache"]["hit"] is True
    assert second.provenance["format"] == "archive"
    assert_matches(second, expected)

    small = load_dataset(cifar_cfg(archive, "dataset.img_size=16"), cache)
    assert calls == [16]
    assert small.provenance["decode_cache"]["hit"] is False
    assert small.provenance["decode_cache"]["key"] != first.provenance["decode_cache"]["key"]
    assert small.x_train.shape == (30, 3, 16, 16) and small.x_test.shape == (20, 3, 16, 16)
    assert small.img_size == 16 and small.x_train.dtype == torch.uint8
    assert torch.equal(small.y_train, expected["train"][1]) and torch.equal(small.y_test, expected["test"][1])
    colours = expected["train"][0][~expected["train"][2]][:, :, :1, :1].int()
    assert (small.x_train[~expected["train"][2]].int() - colours).abs().max() <= 1  # solid colours stay solid at 16x16
    assert_stats(small)
    assert len(entries(cache)) == 2
    assert load_dataset(cifar_cfg(archive, "dataset.img_size=16"), cache).provenance["decode_cache"]["hit"] is True


# --- 3. torchvision's pickle batches ---------------------------------------------------------------------------------


def write_torchvision_batches(parent: Path, seed: int = 1, per_batch: int = 2, n_test: int = 3) -> dict:
    """Tiny ``parent/cifar-10-batches-py`` in the official format; returns the expected NCHW tensors.

    Each batch is a dict with "data" (uint8, N x 3072 rows: the 1024 red values, then green, then blue, row-major)
    and "labels". The official files are Python 2 pickles whose str keys unpickle as str under torchvision's
    ``encoding="latin1"``, so the keys are written as str here (bytes keys would unpickle as b"data" and torchvision
    would fail with KeyError).
    """
    rng = np.random.default_rng(seed)
    folder = parent / cifar10_mod.TORCHVISION_DIR
    folder.mkdir(parents=True)

    def batch(name: str, n: int) -> tuple[np.ndarray, list[int]]:
        rows = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        with open(folder / name, "wb") as fh:
            pickle.dump({"batch_label": name, "labels": labels, "data": rows, "filenames": [f"{i}.png" for i in range(n)]}, fh, 2)
        return rows, labels

    train = [batch(f"data_batch_{i}", per_batch) for i in range(1, 6)]
    test_rows, test_labels = batch("test_batch", n_test)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"num_cases_per_batch": per_batch, "label_names": list(CLASSES), "num_vis": 3072}, fh, 2)
    train_rows = np.concatenate([r for r, _ in train])
    return {
        "x_train": torch.from_numpy(train_rows.reshape(-1, 3, 32, 32).copy()),
        "y_train": torch.tensor([label for _, labels in train for label in labels]),
        "x_test": torch.from_numpy(test_rows.reshape(-1, 3, 32, 32).copy()),
        "y_test": torch.tensor(test_labels),
        "rows": train_rows,
    }


@pytest.fixture
def trust_fake_batches(monkeypatch):
    """torchvision md5-checks the official batch files (``CIFAR10._check_integrity``) and batches.meta (the module's
    ``check_integrity``, called from ``_load_meta``) before unpickling; the generated stand-ins cannot match those
    sums, so both checks are made to pass."""
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    return tv_cifar


@pytest.mark.parametrize("point_at", ["parent", "batches_folder"])
def test_torchvision_batches_load_as_nchw(point_at, tmp_path, trust_fake_batches):
    parent = tmp_path / "data"
    want = write_torchvision_batches(parent)
    root = parent if point_at == "parent" else parent / cifar10_mod.TORCHVISION_DIR
    data = load_dataset(cifar_cfg(root), tmp_path / "cache")
    assert data.provenance["format"] == "torchvision"
    assert data.provenance["decode_cache"]["hit"] is False
    assert data.class_names == CLASSES
    for name in ("x_train", "y_train", "x_test", "y_test"):
        got = getattr(data, name)
        assert got.shape == want[name].shape and got.dtype == want[name].dtype, name
        assert torch.equal(got, want[name]), name
    assert data.x_train.shape == (10, 3, 32, 32) and data.x_test.shape == (3, 3, 32, 32) and data.x_train.is_contiguous()
    # Plane order, spelled out: channel 0 of image 0 is the first 1024 values of its row, channel 2 the last 1024.
    assert torch.equal(data.x_train[0, 0], torch.from_numpy(want["rows"][0, :1024].reshape(32, 32)))
    assert torch.equal(data.x_train[0, 2], torch.from_numpy(want["rows"][0, 2048:].reshape(32, 32)))
    assert_stats(data)

    again = load_dataset(cifar_cfg(root), tmp_path / "cache")
    assert again.provenance["decode_cache"]["hit"] is True
    assert torch.equal(again.x_train, want["x_train"]) and torch.equal(again.y_test, want["y_test"])


def test_torchvision_batches_resize_to_img_size(tmp_path, trust_fake_batches):
    parent = tmp_path / "data"
    want = write_torchvision_batches(parent)
    data = load_dataset(cifar_cfg(parent, "dataset.img_size=16"), tmp_path / "cache")
    assert data.x_train.shape == (10, 3, 16, 16) and data.x_test.shape == (3, 3, 16, 16) and data.x_train.dtype == torch.uint8
    assert torch.equal(data.y_train, want["y_train"]) and torch.equal(data.y_test, want["y_test"])
    assert data.provenance["format"] == "torchvision"


def test_torchvision_resized_stats_describe_the_resized_tensors(tmp_path, trust_fake_batches):
    write_torchvision_batches(tmp_path / "data")
    assert_stats(load_dataset(cifar_cfg(tmp_path / "data", "dataset.img_size=16"), tmp_path / "cache"))


def test_download_into_download_dir_then_reuse(tmp_path, trust_fake_batches, monkeypatch):
    """root=null: torchvision downloads into dataset.download_dir (faked here, no network); the next run reuses it."""
    downloads = []
    expected = {}

    def fake_download(self):
        downloads.append(self.root)
        expected.update(write_torchvision_batches(Path(self.root)))

    monkeypatch.setattr(trust_fake_batches.CIFAR10, "download", fake_download)
    download_dir = tmp_path / "dl"
    cfg = compose_config(["dataset=cifar10", "dataset.root=null", f"dataset.download_dir={download_dir}"]).dataset
    first = load_dataset(cfg, tmp_path / "cache")
    assert downloads == [str(download_dir)]
    assert torch.equal(first.x_train, expected["x_train"]) and torch.equal(first.y_test, expected["y_test"])
    assert first.provenance["decode_cache"]["hit"] is False
    second = load_dataset(cfg, tmp_path / "cache")
    assert len(downloads) == 1
    assert second.provenance["decode_cache"]["hit"] is True
    assert torch.equal(second.x_test, expected["x_test"])


# --- 4. errors -------------------------------------------------------------------------------------------------------


def test_missing_root_is_a_famr_error(tmp_path):
    with pytest.raises(FamrError, match=r"dataset\.root=.*does not exist"):
        load_dataset(cifar_cfg(tmp_path / "nowhere"), tmp_path / "cache")


def test_missing_class_folders_are_named(tmp_path):
    root = tmp_path / "partial"
    for split in ("train", "test"):
        for name in CLASSES[:7]:
            (root / split / name).mkdir(parents=True)
            Image.new("RGB", (32, 32)).save(root / split / name / "a.png")
    with pytest.raises(FamrError, match="class folders horse, ship, truck") as err:
        load_dataset(cifar_cfg(root), tmp_path / "cache")
    assert "dataset.root" in str(err.value)


def test_folder_without_layout_is_a_famr_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FamrError, match="neither a CIFAR-10 image folder nor torchvision's batches"):
        load_dataset(cifar_cfg(tmp_path / "empty"), tmp_path / "cache")


def test_archive_laid_out_at_its_top_decodes_and_one_without_a_class_names_it(cifar_folder, tmp_path):
    folder, expected = cifar_folder
    flat = tmp_path / "flat.tar"
    with tarfile.open(flat, "w") as tar:
        for split in ("train", "test"):
            tar.add(folder / split, arcname=split)  # train/ and test/ at the archive's top, no folder around them
    assert_matches(load_dataset(cifar_cfg(flat), tmp_path / "cache"), expected)

    lacking = tmp_path / "lacking.tar.gz"
    with tarfile.open(lacking, "w:gz") as tar:
        tar.add(folder, arcname="cifar", filter=lambda info: None if "/truck" in info.name else info)
    with pytest.raises(FamrError, match=r"lacking\.tar\.gz:cifar/train lacks the class folders truck; dataset.root must hold"):
        load_dataset(cifar_cfg(lacking), tmp_path / "cache")

    nowhere = tmp_path / "nowhere.tar"
    with tarfile.open(nowhere, "w") as tar:
        tar.add(folder / "train", arcname="a/b/train")  # two folders down: not a layout famr looks for
    with pytest.raises(FamrError, match="has no train/ and test/ folders"):
        load_dataset(cifar_cfg(nowhere), tmp_path / "cache")


def test_corrupt_archive_is_a_famr_error(tmp_path):
    bad = tmp_path / "broken.tar.gz"
    bad.write_bytes(b"not a tarball at all")
    with pytest.raises(FamrError, match="Cannot unpack"):
        load_dataset(cifar_cfg(bad), tmp_path / "cache")


def test_no_root_and_no_download_is_a_famr_error(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    def offline(self):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(tv_cifar.CIFAR10, "download", offline)  # nothing touches the network
    monkeypatch.delenv("FAMR_CIFAR10_ROOT", raising=False)
    cfg = compose_config(["dataset=cifar10"]).dataset
    assert cfg.root is None
    with pytest.raises(FamrError) as err:
        load_dataset(cfg, tmp_path / "cache")
    message = str(err.value)
    assert "dataset.root" in message and "download" in message
    assert "URLError" in message and str(tmp_path / "cache" / "downloads") in message


def test_root_that_is_a_non_archive_file_is_a_famr_error(tmp_path):
    zipped = tmp_path / "cifar10.zip"
    zipped.write_bytes(b"PK\x03\x04")
    with pytest.raises(FamrError, match="dataset.root"):
        load_dataset(cifar_cfg(zipped), tmp_path / "cache")


@pytest.mark.parametrize("via", ["root", "download_dir"])
def test_unverifiable_torchvision_batches_are_a_famr_error(via, tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar.CIFAR10, "download", lambda self: (_ for _ in ()).throw(urllib.error.URLError("offline")))
    parent = tmp_path / "data"
    write_torchvision_batches(parent)  # real md5 checks are left on, so these do not verify
    overrides = [f"dataset.root={parent}"] if via == "root" else ["dataset.root=null", f"dataset.download_dir={parent}"]
    with pytest.raises(FamrError, match="dataset.root"):
        load_dataset(compose_config(["dataset=cifar10", *overrides]).dataset, tmp_path / "cache")


# --- 5. a corrupt decoded-cache entry --------------------------------------------------------------------------------


@pytest.mark.slow
def test_corrupt_cache_entry_is_set_aside_and_decoded_again(cifar_folder, tmp_path, caplog):
    folder, expected = cifar_folder
    cache = tmp_path / "cache"
    first = load_dataset(cifar_cfg(folder), cache)
    key = first.provenance["decode_cache"]["key"]
    weights = cache / "data" / "cifar10" / key / "model.safetensors"
    assert weights.is_file()
    with open(weights, "r+b") as fh:
        fh.truncate(weights.stat().st_size // 2)

    with caplog.at_level("WARNING", logger="famr_cli.cache"):
        again = load_dataset(cifar_cfg(folder), cache)
    assert again.provenance["decode_cache"]["hit"] is False
    assert again.provenance["decode_cache"]["key"] == key
    assert_matches(again, expected)
    assert "unusable" in caplog.text
    aside = list((cache / "data" / "cifar10").glob(f"{key}.bad-*"))
    assert (
        len(aside) == 1
        and (aside[0] / "model.safetensors").stat().st_size < (cache / "data" / "cifar10" / key / "model.safetensors").stat().st_size
    )
    third = load_dataset(cifar_cfg(folder), cache)
    assert third.provenance["decode_cache"]["hit"] is True
    assert_matches(third, expected)
