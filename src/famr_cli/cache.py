"""Cache of models and decoded datasets: one directory per key, safetensors plus JSON metadata.

The key is a hash of everything that determines the model, so "train once, forget many" holds
across runs and sweep jobs. Writes go to a temp file first and are renamed into place, so a
reader never sees a half-written entry; a hash mismatch on load means the entry is not used.
Building an entry happens under a per-key file lock, so parallel sweep jobs (joblib, SLURM jobs on a
shared file system) that miss the same key build it once: the others wait, then load it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn as nn
from filelock import FileLock, Timeout
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

# Bump when a code change alters what a cached model would contain (training semantics,
# dataset decoding, backbone construction), so stale entries stop matching.
CACHE_FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
META = "meta.json"

log = logging.getLogger(__name__)
T = TypeVar("T")


@contextmanager
def cache_lock(entry_path: Path, what: str) -> Iterator[None]:
    """Hold ``.<key>.lock`` beside the entry (an OS file lock: released even if the holder is SIGKILLed).

    Hidden, like the staging dirs, so a listing of the cache shows entries only.
    """
    entry_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(entry_path.with_name(f".{entry_path.name}.lock")))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("Another job is building the %s at %s; waiting for it instead of building it twice.", what, entry_path)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def build_once(entry_path: Path, what: str, load: Callable[[], T | None], build: Callable[[], T]) -> T:
    """``load()`` if the entry is there; otherwise ``build()`` it under the entry's lock.

    The second ``load()`` inside the lock picks up what a job we waited for has just built.
    """
    found = load()
    if found is not None:
        return found
    with cache_lock(entry_path, what):
        found = load()
        return found if found is not None else build()


def cache_key(inputs: dict[str, Any]) -> str:
    payload = json.dumps({"format": CACHE_FORMAT_VERSION, **inputs}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class CacheEntry:
    root: Path
    kind: str
    key: str

    @property
    def path(self) -> Path:
        return self.root / self.kind / self.key

    def exists(self) -> bool:
        return (self.path / WEIGHTS).is_file() and (self.path / META).is_file()

    def load_tensors(self, device: torch.device | str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """The stored tensors and metadata, or None when the entry is missing or does not verify."""
        if not self.exists():
            return None
        try:
            meta = json.loads((self.path / META).read_text())
            if sha256_file(self.path / WEIGHTS) != meta["weights_sha256"]:
                raise ValueError("weights do not match their recorded sha256")
            return load_file(str(self.path / WEIGHTS), device=str(device)), meta
        except (OSError, ValueError, KeyError, SafetensorError) as err:
            self._quarantine(f"{type(err).__name__}: {err}")
            return None

    def load(self, model: nn.Module, device: torch.device) -> dict[str, Any] | None:
        """Load weights into ``model``; return the metadata, or None when the entry is unusable."""
        loaded = self.load_tensors(device)
        if loaded is None:
            return None
        state, meta = loaded
        try:
            model.load_state_dict(state)
        except RuntimeError as err:  # a different architecture under the same key
            self._quarantine(f"weights do not fit the model: {str(err).splitlines()[0]}")
            return None
        return meta

    def save_tensors(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{self.key}.", dir=self.path.parent))
        try:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(staging / WEIGHTS))
            meta = {**meta, "key": self.key, "weights_sha256": sha256_file(staging / WEIGHTS), "saved_at": time.time()}
            (staging / META).write_text(json.dumps(meta, indent=2, default=str))
            if self.path.exists():
                shutil.rmtree(self.path)
            os.replace(staging, self.path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def save(self, model: nn.Module, meta: dict[str, Any]) -> None:
        self.save_tensors(model.state_dict(), meta)

    def _quarantine(self, reason: str) -> None:
        aside = self.path.with_name(f"{self.key}.bad-{time.time_ns()}")
        log.warning("Cache entry %s is unusable (%s); moved it to %s and will rebuild it.", self.path, reason, aside)
        os.replace(self.path, aside)


def cache_root(cfg) -> Path:
    """The ``cache_dir`` a config names, with ``~`` expanded."""
    return Path(cfg.cache_dir).expanduser()
