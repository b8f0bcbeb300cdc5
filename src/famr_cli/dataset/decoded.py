"""Decode once: decoded uint8 tensors cached per dataset and source, loaded in seconds later."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from famr_cli.cache import CacheEntry, build_once, cache_key
from famr_cli.dataset import ImageData

log = logging.getLogger(__name__)
TENSORS = ("x_train", "y_train", "x_test", "y_test")


def load_or_decode(cache_root: Path, name: str, key_inputs: dict[str, Any], decode: Callable[[], ImageData]) -> ImageData:
    """``key_inputs`` must name everything the decoded tensors depend on (source, size, settings)."""
    key = cache_key({"dataset": name, **key_inputs})
    entry = CacheEntry(root=cache_root, kind=f"data/{name}", key=key)
    start = time.perf_counter()

    def load() -> ImageData | None:
        loaded = entry.load_tensors()
        if loaded is None:
            return None
        tensors, meta = loaded
        seconds = time.perf_counter() - start
        log.info("Decoded %s loaded from cache %s in %.2f s.", name, entry.path, seconds)
        return ImageData(
            **{k: tensors[k] for k in TENSORS},
            class_names=list(meta["class_names"]),
            mean=tuple(meta["mean"]),
            std=tuple(meta["std"]),
            provenance={**meta["provenance"], "decode_cache": {"key": key, "hit": True, "seconds": seconds}},
        )

    def build() -> ImageData:
        log.info("Decoding %s from %s (once; later runs load the decoded cache).", name, key_inputs.get("source"))
        data = decode()
        seconds = time.perf_counter() - start
        entry.save_tensors(
            {k: getattr(data, k) for k in TENSORS},
            {"class_names": data.class_names, "mean": data.mean, "std": data.std, "provenance": data.provenance, "inputs": key_inputs},
        )
        log.info("Decoded %s in %.1f s; cached at %s.", name, seconds, entry.path)
        data.provenance = {**data.provenance, "decode_cache": {"key": key, "hit": False, "seconds": seconds}}
        return data

    return build_once(entry.path, f"decoded {name} dataset", load, build)
