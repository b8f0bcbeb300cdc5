"""Device choice and seeding: the two pieces of global state every stage depends on."""

from __future__ import annotations

import random

import numpy as np
import torch

from famr_cli.errors import FamrError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FamrError(f"device={name} was requested but no CUDA device is available; use device=auto or device=cpu.")
    try:
        return torch.device(name)
    except RuntimeError:
        raise FamrError(f"Unknown device '{name}': use device=auto, device=cpu or device=cuda[:N].") from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
