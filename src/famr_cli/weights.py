"""A trained model the user brings (``original_weights=PATH``), read without ever unpickling it.

``.safetensors`` files are read as such; any other file (``.pt``, ``.pth``, ``.bin``) goes through
``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers, so a
checkpoint from an untrusted source cannot run code. Common wrappers are unwrapped: a
``{"state_dict": ...}`` or ``{"model": ...}`` dict, and DDP's ``module.`` prefix.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file

from famr_cli.cache import sha256_file
from famr_cli.errors import FamrError

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


@dataclass
class UserWeights:
    path: Path
    sha256: str
    state: dict[str, torch.Tensor]


def read_user_weights(path_setting: object) -> UserWeights:
    path = Path(str(path_setting)).expanduser()
    if not path.is_file():
        raise FamrError(
            f"original_weights={path_setting} is not a file; give the path of a trained model's .safetensors or .pt state dict."
        )
    try:
        state = _read(path)
    except (SafetensorError, pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise FamrError(
            f"original_weights={path} cannot be read as a state dict of tensors ({reason}); "
            "save it with safetensors or torch.save(model.state_dict(), path) (famr never unpickles other objects)."
        ) from None
    state = _unwrap(state)
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FamrError(f"original_weights={path} holds no state dict of tensors; save it with torch.save(model.state_dict(), path).")
    return UserWeights(path, sha256_file(path), state)


def _read(path: Path) -> object:
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def _unwrap(state: object) -> dict[str, torch.Tensor]:
    if isinstance(state, dict):
        for key in WRAPPER_KEYS:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        return {}
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def load_into(model: nn.Module, weights: UserWeights, backbone_name: str) -> None:
    """Load strictly: a backbone that differs from the one trained must fail loudly, never half-load."""
    try:
        model.load_state_dict(weights.state)
    except RuntimeError as err:
        missing = [k for k in model.state_dict() if k not in weights.state]
        unexpected = [k for k in weights.state if k not in model.state_dict()]
        if missing or unexpected:
            detail = f"{len(missing)} missing keys (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        else:
            detail = "tensor shapes differ (" + str(err).split("size mismatch for ")[-1].split("\n")[0][:120] + ")"
        raise FamrError(
            f"original_weights={weights.path} does not fit backbone={backbone_name} for this dataset: {detail}; "
            "choose the backbone and dataset the model was trained with."
        ) from None
