"""The ImageNet folder layout ``ROOT/{train,val}/<wnid>/*.JPEG``: which folders and images a config selects.

Only the class folders named in ``dataset.classes`` matter: other classes may be missing or change
without moving the decode-cache key (:func:`signature`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from famr_cli.dataset.image_folder import list_images, source_signature
from famr_cli.errors import FamrError

SPLITS = {"train": "train", "test": "val"}  # ImageData split -> folder under the root
HOW_TO_PROVIDE = "set dataset.root=DIR (or FAMR_IMAGENET_ROOT=DIR) where DIR holds train/ and val/ with one folder per WordNet id"


def check_root(root_value: Any, classes: list[str]) -> Path:
    if root_value is None or str(root_value).strip() == "":
        raise FamrError(f"ImageNet-100 needs a local ImageNet copy: {HOW_TO_PROVIDE}.")
    root = Path(str(root_value)).expanduser().resolve()
    if not root.is_dir():
        raise FamrError(f"dataset.root={root_value} does not exist or is not a folder; {HOW_TO_PROVIDE}.")
    for folder in SPLITS.values():
        if not (root / folder).is_dir():
            raise FamrError(f"dataset.root={root_value} has no {folder}/ folder; {HOW_TO_PROVIDE}.")
    for folder in SPLITS.values():
        split_dir = root / folder
        present = {p.name for p in split_dir.iterdir() if p.is_dir()}
        missing = [c for c in classes if c not in present]
        if missing:
            shown = ", ".join(missing[:10]) + (", ..." if len(missing) > 10 else "")
            raise FamrError(
                f"{split_dir} lacks {len(missing)} of the {len(classes)} class folders in dataset.classes ({shown}); "
                "copy those WordNet id folders into it or remove them from dataset.classes."
            )
    return root


def select_files(root: Path, classes: list[str], fraction: float) -> dict[str, tuple[list[Path], list[int]]]:
    """Per split: the first ceil(fraction * n) images of each class in sorted order, and their labels."""
    selected: dict[str, tuple[list[Path], list[int]]] = {}
    for split, folder in SPLITS.items():
        files: list[Path] = []
        labels: list[int] = []
        empty = []
        for label, wnid in enumerate(classes):
            found = list_images(root / folder / wnid)
            if not found:
                empty.append(wnid)
            found = found[: math.ceil(fraction * len(found))]
            files += found
            labels += [label] * len(found)
        if empty:
            shown = ", ".join(empty[:10]) + (", ..." if len(empty) > 10 else "")
            raise FamrError(
                f"{root / folder} has {len(empty)} class folders without .JPEG/.jpg/.png images ({shown}); "
                "put images in them or remove those WordNet ids from dataset.classes."
            )
        selected[split] = (files, labels)
    return selected


def signature(root: Path, classes: list[str]) -> dict[str, dict[str, int]]:
    """File count, bytes and newest mtime of each split's selected class folders (other classes do not matter)."""
    out = {}
    for folder in SPLITS.values():
        parts = [source_signature(root / folder / wnid) for wnid in classes]
        out[folder] = {
            "files": sum(p["files"] for p in parts),
            "bytes": sum(p["bytes"] for p in parts),
            "mtime_ns": max(p["mtime_ns"] for p in parts),
        }
    return out
