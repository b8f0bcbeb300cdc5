"""Device choice and seeding: the two pieces of global state every stage depends on."""

from __future__ import annotations

import gc
import os
import random

import numpy as np
import torch

from famr_cli.errors import FamrError
from famr_cli.host import available_cores, cpu_name


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


def set_deterministic(enabled: object) -> None:
    """``deterministic=true``: torch's deterministic algorithms, so a rerun on the same machine repeats every digit.

    cuBLAS needs its workspace pinned before the first CUDA matmul for that; ops with no deterministic
    implementation warn (warn_only) instead of stopping an experiment that has already trained for hours.
    """
    if not isinstance(enabled, bool):
        raise FamrError(f"deterministic must be true or false (got {enabled}); use deterministic=true or deterministic=false.")
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    # Off the deterministic path cuDNN may time its kernels once per input shape and keep the fastest;
    # a training's shapes repeat every step, so that search pays for itself in the first epoch.
    torch.backends.cudnn.benchmark = not enabled
    torch.backends.cudnn.deterministic = enabled


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


def threads_per_job(setting: object, parallel_jobs: int, cores: int | None = None) -> int | None:
    """Torch CPU threads for one job; None leaves torch's default (all cores).

    ``auto`` splits the cores between jobs that run at once (a joblib launcher): two jobs each
    spinning all cores' OpenMP threads ran ~10x slower than one after the other on 2 cores.
    """
    if setting in (None, "auto"):
        if parallel_jobs <= 1:
            return None
        return max(1, (cores or available_cores()) // parallel_jobs)
    try:
        threads = int(setting)
    except (TypeError, ValueError):
        threads = 0
    if threads < 1 or str(setting) != str(threads):
        raise FamrError(f"threads={setting} is not valid: use threads=auto or a whole number of CPU threads >= 1.")
    return threads


def limit_threads(threads: int | None) -> None:
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def describe_device(device: torch.device) -> str:
    """What ran the job, in words: the GPU's name, or the CPU model and the threads torch used."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()}, {torch.get_num_threads()} threads"


# glibc's mallopt parameters (malloc.h): M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def skip_collection_at_exit() -> None:
    """Leave every object alive now out of the garbage collections the interpreter runs while it exits.

    Those collections walk the object graph torch, timm, scipy and Hydra built at import, which they
    cannot free (the modules hold it) and the operating system reclaims anyway: `famr-run --cfg job`
    took 6.6-7.3 s with them and 5.4-5.6 s without (2 Intel Xeon cores, torch 2.14.1), a second and more off
    every job famr-tune and famr-reproduce start. Objects are still freed by reference counting, so files
    close and buffers flush as before; call it only when the process is about to end.
    """
    gc.freeze()


def keep_freed_memory() -> bool:
    """Ask glibc to reuse freed activation buffers instead of returning them to the kernel each step.

    By default every CPU tensor above glibc's dynamic mmap threshold is a fresh mmap and munmap, so each
    training step page-faults its activations in again (a third to a half of the CPU time was kernel time
    in top). Raising the mmap and trim thresholds keeps those pages: scripts/bench_allocator.py measured
    423 -> 539 images/s (1.28x, median of 3 alternating runs; resnet_narrow, batch 128, 32 px, 2 AMD EPYC
    cores, torch 2.14.1). No effect on CUDA memory; a no-op where libc is not glibc.
    """
    if os.environ.get("FAMR_MALLOC_TUNING", "1") == "0":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(
            libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) and libc.mallopt(_M_TOP_PAD, 64 << 20)
        )
    except (OSError, AttributeError):
        return False
