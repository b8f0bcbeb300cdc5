"""Training-state checkpoints, so an interrupted original (or Retrain) training resumes where it stopped.

A state holds everything the next epoch depends on: weights (with BatchNorm buffers), optimizer
and scheduler state, the batch stream's generator, and the global RNGs. Restoring it and running
the remaining epochs gives bit-identical weights on CPU to a run that was never interrupted.

Files: ``epoch-NNNN.pt`` (``torch.save`` of tensors and plain Python values only, read back with
``weights_only=True``, so nothing is ever unpickled) and ``latest.json`` naming the newest state
file and its sha256. Both are written to a temp name and renamed, the state file first: a kill at
any moment leaves ``latest.json`` pointing at a complete, verified state.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from famr_cli.cache import sha256_file

log = logging.getLogger("famr")
LATEST = "latest.json"


def rng_state() -> dict[str, Any]:
    """The global RNGs as tensors and plain values (what ``weights_only`` loading accepts)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "gauss": gauss},
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"], np_state["has_gauss"], np_state["gauss"])
    )
    py_state = state["python"]
    random.setstate((py_state["version"], tuple(py_state["internal"].tolist()), py_state["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class TrainingCheckpoint:
    """The training state of one cache entry under ``directory``, saved every ``every`` epochs (0: never)."""

    def __init__(self, directory: Path, every: int, what: str, writer: bool = True):
        self.directory = Path(directory)
        self.every = int(every)
        self.what = what
        # Under DDP every process reads the state (all resume from it), only rank 0 writes or moves it.
        self.writer = writer

    def due(self, epochs_done: int, epochs: int) -> bool:
        # The last epoch's weights go to the cache itself; a state for it would only be deleted again.
        return self.writer and self.every > 0 and epochs_done < epochs and epochs_done % self.every == 0

    def save(self, state: dict[str, Any]) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{int(state['epoch']):04d}.pt"
        with tempfile.NamedTemporaryFile(dir=self.directory, prefix=f".{name}.", delete=False) as tmp:
            torch.save(state, tmp)
        digest = sha256_file(Path(tmp.name))
        os.replace(tmp.name, self.directory / name)
        pointer = {"file": name, "sha256": digest, "epoch": int(state["epoch"]), "epochs": int(state["epochs"])}
        with tempfile.NamedTemporaryFile("w", dir=self.directory, prefix=f".{LATEST}.", delete=False) as tmp:
            json.dump(pointer, tmp)
        os.replace(tmp.name, self.directory / LATEST)
        for old in self.directory.glob("epoch-*.pt"):
            if old.name != name:
                old.unlink(missing_ok=True)
        return self.directory / name

    def load(self) -> dict[str, Any] | None:
        """The newest verified state, or None; an unreadable one is reported, moved aside and ignored."""
        pointer_path = self.directory / LATEST
        if not pointer_path.is_file():
            return None
        try:
            pointer = json.loads(pointer_path.read_text())
            path = self.directory / pointer["file"]
            if sha256_file(path) != pointer["sha256"]:
                raise ValueError(f"{path.name} does not match its recorded sha256")
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # any damage (truncation, bad JSON, foreign pickle) means: do not use it
            if self.writer:
                self._discard(f"{type(err).__name__}: {err}")
            return None

    def clear(self) -> None:
        if self.writer:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _discard(self, reason: str) -> None:
        aside = self.directory.with_name(f"{self.directory.name}.bad-{os.getpid()}")
        log.warning(
            "The saved %s training state in %s is unusable (%s); moved it to %s and training starts over.",
            self.what,
            self.directory,
            reason,
            aside,
        )
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(self.directory, aside)


def saved_epochs(cache_root: Path, kind: str = "original") -> dict[str, int]:
    """Interrupted trainings under ``cache_root``: entry key -> the last epoch with a saved state."""
    found = {}
    for pointer in Path(cache_root).glob(f"{kind}/.*.training/{LATEST}"):
        try:
            found[pointer.parent.name.removeprefix(".").removesuffix(".training")] = int(json.loads(pointer.read_text())["epoch"])
        except (OSError, ValueError, KeyError):
            continue  # being replaced right now; the next look sees it
    return found
