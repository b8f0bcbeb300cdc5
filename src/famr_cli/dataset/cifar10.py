"""CIFAR-10 from an image folder (or a .tar.gz of one), torchvision's pickle batches, or a download.

Class ids follow CIFAR-10's label order, which is alphabetical: airplane (0) … truck (9).
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from famr_cli.checks import whole
from famr_cli.dataset import DATASETS, Dataset, DatasetShape, ImageData, channel_stats
from famr_cli.dataset.decoded import load_or_decode
from famr_cli.dataset.image_folder import check_classes, decode_archive, decode_split, find_layout_root, is_archive, source_signature
from famr_cli.errors import FamrError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TORCHVISION_DIR = "cifar-10-batches-py"
HOW_TO_PROVIDE = (
    "set dataset.root=DIR where DIR is laid out DIR/{train,test}/<class name>/*.png|jpg (or is a .tar.gz of that layout, "
    f"or holds torchvision's {TORCHVISION_DIR}), or run once with internet access so torchvision downloads it"
)


def _from_folder(root: Path, size: int) -> ImageData:
    for split in ("train", "test"):
        check_classes(root / split, CLASSES, "dataset.root")
    x_train, y_train = decode_split(root / "train", CLASSES, size)
    x_test, y_test = decode_split(root / "test", CLASSES, size)
    mean, std = channel_stats(x_train)
    return ImageData(x_train, y_train, x_test, y_test, list(CLASSES), mean, std, provenance={"source": str(root), "format": "folder"})


def _from_torchvision(root: Path, download: bool, size: int) -> ImageData:
    from torchvision.datasets import CIFAR10

    # torchvision checks each batch's md5 before unpickling it, so only the official files are read.
    try:
        train = CIFAR10(str(root), train=True, download=download)
        test = CIFAR10(str(root), train=False, download=False)
    except RuntimeError as err:  # "Dataset not found or corrupted": a partial or altered copy
        raise FamrError(
            f"The CIFAR-10 batches in {root / TORCHVISION_DIR} fail torchvision's checksum ({err}); delete that folder "
            f"and download again, or {HOW_TO_PROVIDE}."
        ) from None

    def tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
        return _resize(torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), size), torch.tensor(ds.targets, dtype=torch.long)

    x_train, y_train = tensors(train)
    x_test, y_test = tensors(test)
    mean, std = channel_stats(x_train)
    return ImageData(
        x_train, y_train, x_test, y_test, list(train.classes), mean, std, provenance={"source": str(root), "format": "torchvision"}
    )


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    import torch.nn.functional as F

    return F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True).round().clamp(0, 255).to(torch.uint8)


def _checked_root(cfg: DictConfig) -> Path | None:
    """dataset.root as a path that exists (a folder or an archive), or None for torchvision's download."""
    if cfg.root is None:
        return None
    root = Path(str(cfg.root)).expanduser().resolve()
    if not root.exists():
        raise FamrError(f"dataset.root={cfg.root} does not exist; {HOW_TO_PROVIDE}.")
    if root.is_file() and not is_archive(root):
        raise FamrError(f"dataset.root={cfg.root} is a file but not a .tar.gz/.tgz/.tar archive; {HOW_TO_PROVIDE}.")
    return root


@DATASETS.register("cifar10")
class Cifar10(Dataset):
    def describe(self, cfg: DictConfig) -> DatasetShape:
        size = whole(cfg.img_size, "dataset.img_size", 32, minimum=1)
        _checked_root(cfg)
        return DatasetShape(list(CLASSES), in_chans=3, img_size=size)

    def load(self, cfg: DictConfig, cache_root: Path) -> ImageData:
        size = self.describe(cfg).img_size
        if cfg.root is None:
            download_dir = Path(cfg.download_dir or cache_root / "downloads").expanduser()
            if (download_dir / TORCHVISION_DIR).is_dir():
                return _torchvision_cached(download_dir, cache_root, size, download=False)
            try:
                return _torchvision_cached(download_dir, cache_root, size, download=True)
            except FamrError:
                raise
            except Exception as err:  # no network, DNS failure, HTTP error, partial download
                raise FamrError(
                    f"CIFAR-10 is not available ({type(err).__name__} while downloading into {download_dir}); {HOW_TO_PROVIDE}."
                ) from None

        root = _checked_root(cfg)
        if is_archive(root):
            return load_or_decode(cache_root, "cifar10", _key(root, size, "archive"), lambda: _from_archive(root, size))
        if (root / TORCHVISION_DIR).is_dir() or root.name == TORCHVISION_DIR:
            return _torchvision_cached(root if root.name != TORCHVISION_DIR else root.parent, cache_root, size, download=False)
        if (root / "train").is_dir() or any((c / "train").is_dir() for c in root.iterdir() if c.is_dir()):
            layout = find_layout_root(root, root)
            return load_or_decode(cache_root, "cifar10", _key(layout, size, "folder"), lambda: _from_folder(layout, size))
        raise FamrError(f"dataset.root={cfg.root} is neither a CIFAR-10 image folder nor torchvision's batches; {HOW_TO_PROVIDE}.")


def _key(source: Path, size: int, kind: str) -> dict:
    return {"source": str(source), "kind": kind, "signature": source_signature(source), "img_size": size}


def _torchvision_cached(root: Path, cache_root: Path, size: int, download: bool) -> ImageData:
    batches = root / TORCHVISION_DIR
    key = _key(batches, size, "torchvision") if batches.is_dir() else None
    if key is not None:
        return load_or_decode(cache_root, "cifar10", key, lambda: _from_torchvision(root, download, size))
    data = _from_torchvision(root, download, size)
    # Downloaded now: cache the decoded tensors under the freshly written batches' signature.
    return load_or_decode(cache_root, "cifar10", _key(batches, size, "torchvision"), lambda: data)


def _from_archive(archive: Path, size: int) -> ImageData:
    decoded = decode_archive(archive, ("train", "test"), CLASSES, size, "dataset.root")
    (x_train, y_train), (x_test, y_test) = decoded["train"], decoded["test"]
    mean, std = channel_stats(x_train)
    return ImageData(x_train, y_train, x_test, y_test, list(CLASSES), mean, std, provenance={"source": str(archive), "format": "archive"})
