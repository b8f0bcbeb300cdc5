"""Multi-GPU (or multi-process CPU) training of the original and Retrain models with PyTorch's DDP.

Launched by ``torchrun`` (``torchrun --standalone --nproc-per-node=4 -m famr_cli experiment=...``),
which sets RANK / WORLD_SIZE / LOCAL_RANK. Every process trains the same model on its share of each
global batch (``train.batch_size`` stays the global batch, so the recipe and its learning rate mean
the same thing at any process count); DDP averages the gradients. Rank 0 alone writes the cache,
the training states and the run's outputs, and alone goes on to unlearn and evaluate: FAMR's step
is small, so only training is spread. Without torchrun nothing here is active and the
single-process path is unchanged.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from famr_cli.errors import FamrError

log = logging.getLogger("famr")


@dataclass(frozen=True)
class Shard:
    """This process's place among the training processes."""

    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def process_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def current_shard() -> Shard | None:
    """The shard of a started process group; None in a single-process run."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return Shard(dist.get_rank(), dist.get_world_size())
    return None


def init_distributed(device: torch.device) -> Shard | None:
    """Start the process group when torchrun launched us (NCCL on CUDA, gloo on CPU); idempotent."""
    if not launched_by_torchrun():
        return None
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        log.info("DDP: process %d of %d (%s backend).", dist.get_rank(), dist.get_world_size(), dist.get_backend())
    return current_shard()


def local_device(device: torch.device) -> torch.device:
    """Each process drives its own GPU (LOCAL_RANK); CPU processes share the CPU."""
    if launched_by_torchrun() and device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def check_batch_size(batch_size: int, shard: Shard | None) -> None:
    if shard is not None and batch_size < shard.world_size:
        raise FamrError(
            f"train.batch_size={batch_size} is smaller than the {shard.world_size} DDP processes; "
            f"use train.batch_size={shard.world_size} or more (it is the global batch)."
        )


def broadcast_flag(value: bool, shard: Shard | None) -> bool:
    """Rank 0's ``value`` on every process (e.g. whether the cache had the model)."""
    if shard is None:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


def barrier(shard: Shard | None) -> None:
    if shard is not None:
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
