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
        device = torch.device(name)
    except RuntimeError:
        raise FamrError(f"Unknown device '{name}': use device=auto, device=cpu or device=cuda[:N].") from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise FamrError(f"device={name} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s); use device=cuda:0.")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


PRECISIONS = ("auto", "bf16", "fp32")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None means plain fp32.

    ``auto`` picks bf16 on CUDA (tensor cores, no loss scaling needed) and fp32 on CPU, where
    bf16 matmuls are only fast on recent server cores.
    """
    if precision not in PRECISIONS:
        raise FamrError(f"Unknown precision '{precision}': use precision=auto, bf16 or fp32.")
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None
