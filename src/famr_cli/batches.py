"""Mini-batches: from tensors on the target device, or streamed from memory-mapped images.

Small datasets fit in accelerator memory, so :class:`TensorBatches` shuffles, augments and
normalises there and the data path never waits on the host. Datasets too large for that
(``ImageData.streamed``, e.g. ImageNet-100) go through :class:`StreamedBatches`: DataLoader
workers read uint8 batches from the memory map, and cropping, flipping and normalisation run on
the device. :func:`make_batches` picks the right one.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, TypedDict

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from famr_cli.augment import (
    RRC_SCALE,
    Augment,
    center_crop,
    normalize,
    random_crop,
    random_cutout,
    random_hflip,
    random_resized_boxes,
    resized_crops,
)

if TYPE_CHECKING:
    from typing_extensions import Required, Unpack

    from famr_cli.dataset import ImageData
    from famr_cli.train.distributed import Shard

    class BatchOptions(TypedDict, total=False):
        """The keywords both kinds of batches take (:class:`_Batches`' parameters), declared once."""

        batch_size: Required[int]
        mean: Required[tuple[float, ...]]
        std: Required[tuple[float, ...]]
        device: Required[torch.device]
        shuffle: bool
        seed: int
        shard: Shard | None


class _Batches:
    """What both kinds share: ``batch_size`` rows at a time, in a seeded order when ``shuffle``,
    normalised on ``device`` by ``mean``/``std``; under DDP (``shard``) each process keeps its rows."""

    def __init__(
        self,
        *,
        batch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device,
        shuffle: bool = False,
        seed: int = 0,
        shard: Shard | None = None,
    ):
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.shuffle = shuffle
        self.seed = seed
        self.shard = shard
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1)

    @property
    def num_samples(self) -> int:
        raise NotImplementedError

    def __len__(self) -> int:
        return (self.num_samples + self.batch_size - 1) // self.batch_size


class TensorBatches(_Batches):
    """Re-iterable: each pass is one epoch in a fresh seeded order."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, augment: Augment | None = None, **options: Unpack[BatchOptions]):
        super().__init__(**options)
        self.x = x.to(self.device)
        self.y = y.to(self.device)
        self.augment = augment or Augment()
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.seed)

    @property
    def num_samples(self) -> int:
        return len(self.y)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Where the stream's randomness stands between epochs (for resuming an interrupted training)."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.y)
        if self.shuffle:
            order = torch.randperm(n, device=self.device, generator=self.generator)
        else:
            order = torch.arange(n, device=self.device)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            if self.shard is not None and len(idx) < self.shard.world_size:
                break  # a last batch too small to give every DDP process a sample: all processes skip it
            xb, yb = self.x[idx], self.y[idx]
            # Under DDP every process draws the whole global batch's crops and flips, then keeps its rows:
            # the generator stays in step across processes, so every epoch's order agrees.
            if self.augment.crop_padding > 0:
                xb = random_crop(xb, self.augment.crop_padding, self.generator, self.augment.padding_mode)
            if self.augment.hflip:
                xb = random_hflip(xb, self.generator)
            xb = normalize(xb, self.mean, self.std)
            if self.augment.cutout > 0:
                xb = random_cutout(xb, self.augment.cutout, self.generator)
            if self.shard is not None:
                xb, yb = xb[self.shard.rank :: self.shard.world_size], yb[self.shard.rank :: self.shard.world_size]
            yield xb, yb


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit seed per (seed, epoch), so every epoch has its own order and crops."""
    return int(np.random.SeedSequence([seed % 2**63, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)


class _BatchReader(Dataset):
    """One item = one whole batch: rows ``idx`` of the uint8 images (centre-cropped if asked) and labels.

    Reading a batch at a time from the memory map costs one worker round trip per batch, not per image.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, center_crop: int | None):
        self.x, self.y, self.center_crop = x, y, center_crop

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.center_crop is None:
            xb = self.x[idx]
        else:
            c, (height, width) = self.center_crop, self.x.shape[-2:]
            top, left = (height - c) // 2, (width - c) // 2
            xb = self.x[idx, :, top : top + c, left : left + c]
        return xb.contiguous(), self.y[idx]


def _worker_context() -> str | None:
    # Workers must inherit the memory map, not receive a pickled copy of it: fork where it is safe.
    return "fork" if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods() else None


class StreamedBatches(_Batches):
    """Re-iterable like :class:`TensorBatches`, for images that stay on the host (e.g. memory-mapped).

    Each pass is one epoch. The epoch's order and random crops come from a generator reseeded with
    (seed, epoch), drawn in the main process, so a seed gives the same batches whatever
    ``num_workers`` is. Workers only read uint8 rows (sorted within a batch, for locality); the batch
    goes to ``device`` (pinned, non-blocking on CUDA), where it is cropped, flipped and normalised.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        crop_size: int | None = None,
        random_crop: bool = False,
        hflip: bool = False,
        num_workers: int = 0,
        indices: torch.Tensor | None = None,
        scale: tuple[float, float] = RRC_SCALE,
        **options: Unpack[BatchOptions],
    ):
        super().__init__(**options)
        self.x = x.cpu()
        self.y = y.cpu()
        # Rows of x/y this stream draws from (all when None), so a subset needs no copy of the images.
        self.indices = None if indices is None else torch.as_tensor(indices, dtype=torch.long).cpu()
        self.crop_size = int(crop_size) if crop_size is not None else int(x.shape[-1])
        if self.crop_size > min(x.shape[-2:]):
            raise ValueError(f"crop_size {self.crop_size} exceeds the stored image size {tuple(x.shape[-2:])}")
        self.random_crop = random_crop
        self.hflip = hflip
        self.scale = scale
        self.num_workers = num_workers
        self.epoch = 0
        stored = int(x.shape[-1]) == self.crop_size and int(x.shape[-2]) == self.crop_size
        # Random crops need the whole stored image on the device; otherwise workers centre-crop.
        self.reader = _BatchReader(self.x, self.y, None if random_crop or stored else self.crop_size)

    @property
    def num_samples(self) -> int:
        return len(self.y) if self.indices is None else len(self.indices)

    def state_dict(self) -> dict[str, int]:
        # Every epoch's draws come from (seed, epoch), so the epoch counter is the whole state.
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])

    def _loader(self, chunks: list[torch.Tensor], generator: torch.Generator) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            self.reader,
            batch_size=None,  # each sampled item is already a whole batch of indices
            sampler=chunks,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            multiprocessing_context=_worker_context() if workers > 0 else None,
            generator=generator,  # seeds the workers' own RNGs (they draw nothing, but keep them deterministic)
        )

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        n = self.num_samples
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        if self.indices is not None:
            order = self.indices[order]
        chunks = [order[s : s + self.batch_size].sort().values for s in range(0, n, self.batch_size)]
        if self.shard is not None:
            # Each DDP process reads only its rows of every global batch (its crops come from its own draws).
            rank, world = self.shard.rank, self.shard.world_size
            chunks = [chunk[rank::world] for chunk in chunks if len(chunk) >= world]
        worker_seeds = torch.Generator().manual_seed(epoch_seed(self.seed, epoch) ^ 0x5EED)
        non_blocking = self.device.type == "cuda"
        for xb, yb in self._loader(chunks, worker_seeds):
            xb = xb.to(self.device, non_blocking=non_blocking)
            yb = yb.to(self.device, non_blocking=non_blocking)
            x = xb.float().div_(255.0)
            # Random draws happen here, in the main process and on the CPU, so they never depend on workers or device.
            flip = torch.rand(len(x), generator=generator) < 0.5 if self.hflip else torch.zeros(len(x), dtype=torch.bool)
            if self.random_crop:
                boxes = random_resized_boxes(len(x), x.shape[-2], x.shape[-1], generator, scale=self.scale)
                x = resized_crops(x, boxes, flip, self.crop_size)
            else:
                if x.shape[-1] != self.crop_size or x.shape[-2] != self.crop_size:
                    x = center_crop(x, self.crop_size)
                if self.hflip:
                    x = torch.where(flip.to(self.device)[:, None, None, None], x.flip(-1), x)
            yield (x - self.mean) / self.std, yb


def make_batches(
    data: ImageData,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device,
    shuffle: bool = False,
    augment: Augment | None = None,
    seed: int = 0,
    train: bool = False,
    indices: torch.Tensor | None = None,
    shard: Shard | None = None,
) -> TensorBatches | StreamedBatches:
    """Batches of ``x``/``y`` (rows ``indices`` only, when given) for ``data``'s kind of storage.

    In-memory data gets :class:`TensorBatches` with ``augment`` exactly as given. Streamed data
    (``data.streamed``, or stored images larger than ``data.crop_size``) gets :class:`StreamedBatches`:
    a training pass (``train``) with an active ``augment`` takes random resized crops (area 35-100 %)
    of ``data.crop_size`` and mirrors them when ``augment.hflip``; every other pass (evaluation,
    or training without augmentation, like FAMR's) takes the centre crop.
    """
    stored = int(x.shape[-1])
    if data.streamed or (data.crop_size is not None and data.crop_size != stored):
        randomize = bool(train and augment is not None and augment.active)
        return StreamedBatches(
            x,
            y,
            batch_size=batch_size,
            mean=data.mean,
            std=data.std,
            device=device,
            shuffle=shuffle,
            crop_size=data.crop_size,
            random_crop=randomize,
            hflip=randomize and bool(augment.hflip),
            num_workers=data.num_workers,
            seed=seed,
            indices=indices,
            shard=shard,
        )
    if indices is not None:
        x, y = x[indices], y[indices]
    return TensorBatches(
        x, y, batch_size=batch_size, mean=data.mean, std=data.std, device=device, shuffle=shuffle, augment=augment, seed=seed, shard=shard
    )
