"""ImageNet-100 from a local ImageNet root, decoded once to memory-mapped uint8 arrays and streamed.

The root is laid out ``ROOT/{train,val}/<wnid>/*.JPEG`` (.jpg/.png too; ``imagenet_layout`` checks
the folders and picks the images); class ids are positions in ``dataset.classes``. Each split is
decoded once (short side resized to ``store_size``, centre crop) straight into a raw ``.npy`` file
under ``<cache_root>/data/imagenet100/<key>/``; every run, including the one that decoded it, opens
those files with ``np.load(mmap_mode="r")``, so nothing is read into RAM up front and batches are
streamed (``famr_cli.batches.StreamedBatches``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
import warnings
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image

from famr_cli.cache import cache_key, cache_lock
from famr_cli.checks import number, whole
from famr_cli.dataset import DATASETS, Dataset, DatasetShape, ImageData
from famr_cli.dataset.imagenet_layout import check_root, select_files, signature
from famr_cli.errors import FamrError

log = logging.getLogger(__name__)

NAME = "imagenet100"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
META = "meta.json"
ARRAYS = ("x_train", "y_train", "x_test", "y_test")
FILES_PER_TASK = 128  # images one decode task handles; keeps the number of futures small


def default_store_size(img_size: int) -> int:
    """The usual "resize to 256, crop 224" ratio: 256 for 224."""
    return round(img_size * 256 / 224)


def _settings(cfg: DictConfig) -> dict[str, Any]:
    classes = [str(c) for c in (cfg.classes or [])]
    if not classes:
        raise FamrError("dataset.classes is empty; list the WordNet ids to use, e.g. dataset.classes=[n01749939,n02869837].")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise FamrError(f"dataset.classes lists {', '.join(repeated)} more than once; list each WordNet id once.")
    img_size = whole(cfg.img_size, "dataset.img_size", 224)
    if img_size < 1:
        raise FamrError(f"dataset.img_size must be a positive number of pixels (got {cfg.img_size}); try dataset.img_size=224.")
    store_size = default_store_size(img_size) if cfg.get("store_size") is None else whole(cfg.store_size, "dataset.store_size", 256)
    if store_size < img_size:
        raise FamrError(
            f"dataset.store_size={store_size} is smaller than dataset.img_size={img_size}; "
            "set dataset.store_size to at least img_size, or null for round(img_size * 256 / 224)."
        )
    fraction = number(cfg.get("fraction", 1.0), "dataset.fraction", 1.0)
    if not 0.0 < fraction <= 1.0:
        raise FamrError(f"dataset.fraction must be in (0, 1] (got {cfg.fraction}); use 1.0 for every image, e.g. 0.1 for a tenth.")
    num_workers = whole(cfg.get("num_workers", 0), "dataset.num_workers", 4)
    if num_workers < 0:
        raise FamrError(f"dataset.num_workers must be >= 0 (got {cfg.num_workers}); 0 reads batches in the main process.")
    return {"classes": classes, "img_size": img_size, "store_size": store_size, "fraction": fraction, "num_workers": num_workers}


def decode_square(path: Path, size: int) -> np.ndarray:
    """``size`` x ``size`` x 3 uint8: the short side resized to ``size``, then a centre crop."""
    try:
        with Image.open(path) as img:
            # JPEG only: let the decoder downscale by 1/2, 1/4 or 1/8 while both sides stay >= size.
            img.draft("RGB", (size, size))
            img = img.convert("RGB")
            w, h = img.size
            short = min(w, h)
            left, top = (w - short) / 2, (h - short) / 2
            # Resizing the centred square box equals "short side to size, then centre crop", in one step.
            img = img.resize((size, size), Image.BILINEAR, box=(left, top, left + short, top + short))
            return np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise FamrError(f"Cannot decode {path} ({type(err).__name__}: {err}); delete or replace that file.") from None


def _decode_threads() -> int:
    return max(1, os.cpu_count() or 1)


def _decode_into(out: np.ndarray, files: list[Path], size: int, desc: str) -> None:
    """Decode ``files`` into the rows of ``out`` with a thread pool (PIL releases the GIL while decoding)."""
    n = len(files)
    done = 0
    lock = threading.Lock()
    start = time.perf_counter()
    next_report = max(n // 10, 1)

    def task(lo: int, hi: int) -> None:
        nonlocal done, next_report
        for i in range(lo, hi):
            out[i] = decode_square(files[i], size).transpose(2, 0, 1)
        with lock:
            done += hi - lo
            if done >= next_report or done == n:
                rate = done / max(time.perf_counter() - start, 1e-9)
                log.info("Decoding ImageNet-100 %s: %d / %d images (%.0f images/s).", desc, done, n, rate)
                next_report = done + max(n // 10, 1)

    with ThreadPoolExecutor(max_workers=_decode_threads()) as pool:
        futures = [pool.submit(task, lo, min(lo + FILES_PER_TASK, n)) for lo in range(0, n, FILES_PER_TASK)]
        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in finished if f.exception() is not None]
        if failed:
            for f in futures:
                f.cancel()
            raise failed[0].exception()


def _entry_dir(cache_root: Path, key: str) -> Path:
    return cache_root / "data" / NAME / key


def _open_entry(entry: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """The cached arrays (images memory-mapped, labels in RAM) and metadata, or None when unusable."""
    if not (entry / META).is_file():
        return None
    try:
        meta = json.loads((entry / META).read_text())
        arrays = {}
        for name in ARRAYS:
            images = name.startswith("x_")
            arr = np.load(entry / f"{name}.npy", mmap_mode="r" if images else None, allow_pickle=False)
            want_dtype = np.uint8 if images else np.int64
            if list(arr.shape) != list(meta["shapes"][name]) or arr.dtype != want_dtype:
                raise ValueError(f"{name}.npy has shape {arr.shape} and dtype {arr.dtype}, not {meta['shapes'][name]} {want_dtype}")
            arrays[name] = arr
        return arrays, meta
    except (OSError, ValueError, KeyError, TypeError) as err:
        # Decoded data is large and rebuilt from the source, so a broken entry is removed, not kept aside.
        log.warning("Decoded ImageNet-100 cache %s is unusable (%s: %s); removing it and decoding again.", entry, type(err).__name__, err)
        shutil.rmtree(entry, ignore_errors=True)
        return None


def _write_entry(entry: Path, root: Path, settings: dict[str, Any], key_inputs: dict[str, Any]) -> float:
    """Decode both splits into a staging folder, then rename it into place; returns the decode seconds."""
    start = time.perf_counter()
    size = settings["store_size"]
    selected = select_files(root, settings["classes"], settings["fraction"])
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        shapes = {}
        for split, (files, labels) in selected.items():
            log.info("Decoding ImageNet-100 %s: %d images from %s at %d px (once; later runs reuse it).", split, len(files), root, size)
            x = np.lib.format.open_memmap(staging / f"x_{split}.npy", mode="w+", dtype=np.uint8, shape=(len(files), 3, size, size))
            _decode_into(x, files, size, split)
            x.flush()
            del x
            np.save(staging / f"y_{split}.npy", np.asarray(labels, dtype=np.int64))
            shapes[f"x_{split}"] = [len(files), 3, size, size]
            shapes[f"y_{split}"] = [len(files)]
        seconds = time.perf_counter() - start
        meta = {
            "key": entry.name,
            "inputs": key_inputs,
            "class_names": settings["classes"],
            "shapes": shapes,
            "decode_s": seconds,
            "saved_at": time.time(),
        }
        # meta.json is written last: a folder without it is never used.
        (staging / META).write_text(json.dumps(meta, indent=2, default=str))
        if entry.exists():
            shutil.rmtree(entry)
        try:
            os.replace(staging, entry)
        except OSError:
            if _open_entry(entry) is None:  # not a concurrent writer that finished first
                raise
            log.info("Another process cached the same ImageNet-100 decode first; using %s.", entry)
        return seconds
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _mapped_tensor(arr: np.ndarray) -> torch.Tensor:
    """A tensor over the read-only memory map (no copy); nothing in famr writes to dataset images."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(arr)


@DATASETS.register(NAME)
class ImageNet100(Dataset):
    def describe(self, cfg: DictConfig) -> DatasetShape:
        settings = _settings(cfg)
        check_root(cfg.root, settings["classes"])
        return DatasetShape(list(settings["classes"]), in_chans=3, img_size=settings["img_size"])

    def load(self, cfg: DictConfig, cache_root: Path) -> ImageData:
        settings = _settings(cfg)
        classes = settings["classes"]
        root = check_root(cfg.root, classes)
        key_inputs = {
            "dataset": NAME,
            "source": str(root),
            "signature": signature(root, classes),
            "store_size": settings["store_size"],
            "fraction": settings["fraction"],
            "classes": classes,
        }
        key = cache_key(key_inputs)
        entry = _entry_dir(Path(cache_root), key)
        start = time.perf_counter()
        opened = _open_entry(entry)
        hit = opened is not None
        if opened is None:
            with cache_lock(entry, "decoded ImageNet-100"):
                opened = _open_entry(entry)  # decoded by the job we waited for
                if opened is None:
                    _write_entry(entry, root, settings, key_inputs)
                    opened = _open_entry(entry)
            if opened is None:
                raise FamrError(f"The decoded ImageNet-100 cache at {entry} could not be read back; check free disk space under cache_dir.")
        seconds = time.perf_counter() - start
        arrays, meta = opened
        if hit:
            log.info("Decoded ImageNet-100 memory-mapped from cache %s (decoded earlier in %.0f s).", entry, meta.get("decode_s", 0.0))
        else:
            log.info("Decoded ImageNet-100 in %.1f s; cached at %s.", seconds, entry)
        return ImageData(
            x_train=_mapped_tensor(arrays["x_train"]),
            y_train=torch.from_numpy(arrays["y_train"]),
            x_test=_mapped_tensor(arrays["x_test"]),
            y_test=torch.from_numpy(arrays["y_test"]),
            class_names=list(classes),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            provenance={
                "source": str(root),
                "format": "folder",
                "store_size": settings["store_size"],
                "fraction": settings["fraction"],
                "decode_cache": {"key": key, "hit": hit, "seconds": seconds, "path": str(entry)},
            },
            streamed=True,
            crop_size=settings["img_size"],
            num_workers=settings["num_workers"],
        )
