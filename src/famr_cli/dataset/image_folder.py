"""Image folders laid out ``ROOT/<split>/<class name>/*.{png,jpg,jpeg}``, decoded to uint8 tensors."""

from __future__ import annotations

import os
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from famr_cli.errors import FamrError

EXTENSIONS = (".png", ".jpg", ".jpeg")


def list_images(class_dir: Path) -> list[Path]:
    return sorted(p for p in class_dir.iterdir() if p.suffix.lower() in EXTENSIONS)


def check_classes(split_dir: Path, class_names: list[str], key: str) -> None:
    present = {p.name for p in split_dir.iterdir() if p.is_dir()} if split_dir.is_dir() else set()
    missing = [c for c in class_names if c not in present]
    if missing:
        raise FamrError(f"{split_dir} lacks the class folders {', '.join(missing)}; {key} must hold one folder per class.")


def _decode(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as img:
        img = img.convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


def decode_split(split_dir: Path, class_names: list[str], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of ``split_dir`` as N x 3 x size x size uint8, labels by position in ``class_names``."""
    files, labels = [], []
    for label, name in enumerate(class_names):
        found = list_images(split_dir / name)
        files += found
        labels += [label] * len(found)
    if not files:
        raise FamrError(f"{split_dir} holds no .png/.jpg/.jpeg images; check the dataset root.")
    # PIL releases the GIL while decoding, so threads use every core.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        images = list(pool.map(lambda p: _decode(p, size), files, chunksize=256))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels, dtype=torch.long)


def source_signature(path: Path) -> dict[str, int]:
    """Cheap identity of a file or folder tree (file count, bytes, newest mtime) for cache keys."""
    if path.is_file():
        st = path.stat()
        return {"files": 1, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    files = total = newest = 0
    for dirpath, _dirs, names in os.walk(path):
        for name in names:
            st = os.stat(os.path.join(dirpath, name))
            files += 1
            total += st.st_size
            newest = max(newest, st.st_mtime_ns)
    return {"files": files, "bytes": total, "mtime_ns": newest}


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar"))


def extract_archive(archive: Path, into: Path) -> Path:
    """Unpack ``archive`` under ``into`` and return the folder that holds ``train/``."""
    into.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")  # "data" refuses absolute paths and links out of the tree
    except (tarfile.TarError, OSError) as err:
        raise FamrError(f"Cannot unpack {archive} ({err}); pass an intact .tar.gz or an unpacked folder as dataset.root.") from None
    return find_layout_root(into, archive)


def find_layout_root(path: Path, origin: Path) -> Path:
    """``path`` itself or its single subfolder, whichever holds ``train/``."""
    if (path / "train").is_dir():
        return path
    children = [c for c in path.iterdir() if c.is_dir() and (c / "train").is_dir()]
    if len(children) == 1:
        return children[0]
    raise FamrError(
        f"{origin} has no train/ and test/ folders (directly or one level down); see docs/configuration.md for the expected layout."
    )
