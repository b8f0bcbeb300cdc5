"""Per-parameter statistics of the original model, kept across the trials of one famr-tune study.

A famr-tune study runs its trials in one process, and some methods spend most of a trial on a statistic
that the searched values never change: Fisher forgetting's diagonal Fisher of D_r (its search varies
alpha only) and SSD's importances (its search varies alpha and lambda). The memo keeps the last few such
statistics, keyed by everything they depend on: the model (its class, structure, weights and buffers),
the training data, the forget rows, the method's options that enter the statistic, the seed, the device
and the precision. A hit returns copies that are bit-identical to a fresh computation, so no figure
changes; only the trial's unlearning seconds shrink, which is why the memo is on only where famr-tune
turns it on (``FAMR_STATISTIC_MEMO=1`` in its studies' environment): in any other run, a sweep's or a
table's, every job pays the whole pass in its RTE.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from famr_cli.method import UnlearnContext

# The switch famr-tune sets for its studies; any other value (or none) computes every statistic afresh.
ENV_SWITCH = "FAMR_STATISTIC_MEMO"
# At most two statistics per run (SSD's), for up to four forget sets per trial; entries are kept on the CPU.
MEMO_SIZE = 8

_entries: OrderedDict[tuple[Hashable, ...], list[torch.Tensor]] = OrderedDict()
computed = 0  # statistics computed (misses) in this process, for the tests


def _raw_bytes(tensor: torch.Tensor) -> bytes:
    """The tensor's values as stored (any dtype, 0-d included)."""
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""


def model_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter (name, whether it trains, values) and buffer of ``model``."""
    digest = hashlib.sha256(f"{type(model).__qualname__}\n{model!r}".encode())
    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
        digest.update(f"{name}:{tensor.requires_grad}".encode())
        digest.update(_raw_bytes(tensor))
    return digest.hexdigest()


def tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's shape, dtype and values (training images, label vectors, row indices)."""
    digest = hashlib.sha256(f"{tuple(tensor.shape)}:{tensor.dtype}".encode())
    digest.update(_raw_bytes(tensor))
    return digest.hexdigest()


def run_digest(model: nn.Module, ctx: UnlearnContext) -> tuple[Hashable, ...]:
    """What every statistic of a run depends on besides the method's own options: the model, the training data,
    the forget rows, the seed, the device, the precision and the augmentation."""
    data = ctx.data
    return (
        model_digest(model),
        tensor_digest(data.x_train),
        tensor_digest(data.y_train),
        tensor_digest(ctx.split.forget_train),
        tensor_digest(ctx.split.retain_train),
        ctx.seed,
        str(ctx.device),
        str(ctx.autocast),
        repr(ctx.augment),
        repr((data.mean, data.std, data.crop_size)),
    )


def memoised(
    name: str, options: tuple[Hashable, ...], model: nn.Module, ctx: UnlearnContext, compute: Callable[[], list[torch.Tensor]]
) -> list[torch.Tensor]:
    """``compute()``'s tensors, computed once per statistic ``name``, its ``options`` and the run (:func:`run_digest`)
    among the last :data:`MEMO_SIZE` keys; callers get copies.

    Streamed datasets (memory-mapped, ImageNet-sized) are never memoised: hashing them would cost a pass of its own.
    """
    global computed
    if os.environ.get(ENV_SWITCH) != "1" or ctx.data.streamed:
        computed += 1
        return compute()
    key = (name, options, *run_digest(model, ctx))
    if key in _entries:
        _entries.move_to_end(key)
        return [t.to(ctx.device, copy=True) for t in _entries[key]]
    fresh = compute()
    _entries[key] = [t.detach().to("cpu", copy=True) for t in fresh]
    computed += 1
    while len(_entries) > MEMO_SIZE:
        _entries.popitem(last=False)
    return fresh


def clear() -> None:
    _entries.clear()
