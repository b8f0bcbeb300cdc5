"""Image transforms applied to whole batches on the device: the training augmentations and normalisation.

Every random draw takes an explicit generator, so a seed fixes the crops, flips and Cutout squares.
In-memory batches (:class:`famr_cli.batches.TensorBatches`) pad-and-crop, flip and cut out as a
:class:`Augment` asks; streamed ones (:class:`famr_cli.batches.StreamedBatches`) take random resized
crops on a training pass and the centre crop on any other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

PADDING_MODES = ("zeros", "reflect")


@dataclass(frozen=True)
class Augment:
    crop_padding: int = 0
    hflip: bool = False
    # The fast CIFAR recipes' extras: reflect padding for the crops, and Cutout (DeVries & Taylor 2017):
    # one random square of this side per image set to the channel mean (0 after normalisation).
    padding_mode: str = "zeros"
    cutout: int = 0

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.hflip or self.cutout > 0


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 images to model inputs. Float images are model-ready values already (famr_cli.api's): they
    are only shifted and scaled, and the API's identity mean 0 / std 1 passes them through unchanged."""
    if x.is_floating_point():
        return (x - mean) / std
    return (x.float().div_(255.0) - mean) / std


def _reflect_pad(x: torch.Tensor, padding: int) -> torch.Tensor:
    """Mirror-pad the last two dims by index arithmetic, so uint8 images need no float copy."""
    h, w = x.shape[-2:]

    def mirrored(size: int) -> torch.Tensor:
        idx = torch.arange(-padding, size + padding, device=x.device).abs()
        return torch.where(idx >= size, 2 * (size - 1) - idx, idx)

    return x[..., mirrored(h), :][..., mirrored(w)]


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator, mode: str = "zeros") -> torch.Tensor:
    """Pad by ``padding`` (zeros, or mirrored with ``mode="reflect"``) and take one random crop per image,
    vectorised over the batch."""
    n, _, h, w = x.shape
    padded = _reflect_pad(x, padding) if mode == "reflect" else F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=generator)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None]
    # Advanced indexing yields N x H x W x C; move channels back.
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def random_cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero one ``size`` x ``size`` square per (normalised) image, its centre uniform over the image and
    the square clipped at the border, as in DeVries & Taylor's Cutout."""
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n, 1, 1), device=x.device, generator=generator)
    cx = torch.randint(0, w, (n, 1, 1), device=x.device, generator=generator)
    top, left = cy - size // 2, cx - size // 2
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return x.masked_fill(inside[:, None], 0.0)


def random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


# Random-resized-crop ranges for streamed training: fraction of the image area, and aspect ratio.
RRC_SCALE = (0.35, 1.0)
RRC_RATIO = (3 / 4, 4 / 3)


def random_resized_boxes(
    n: int, height: int, width: int, generator: torch.Generator, scale=RRC_SCALE, ratio=RRC_RATIO, tries: int = 10
) -> torch.Tensor:
    """n boxes (x0, y0, w, h) in pixels covering ``scale`` of the area at an aspect ratio within ``ratio``.

    Like torchvision's RandomResizedCrop: up to ``tries`` draws per image, the first that fits wins;
    if none fits, the last draw is clipped to the image.
    """
    area = height * width * torch.empty(n, tries).uniform_(scale[0], scale[1], generator=generator)
    aspect = torch.empty(n, tries).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator).exp()
    w, h = (area * aspect).sqrt(), (area / aspect).sqrt()
    fits = (w <= width) & (h <= height)
    pick = torch.where(fits.any(1), fits.float().argmax(1), torch.full((n,), tries - 1))[:, None]
    w, h = w.gather(1, pick).squeeze(1).clamp(max=width), h.gather(1, pick).squeeze(1).clamp(max=height)
    x0 = torch.rand(n, generator=generator) * (width - w)
    y0 = torch.rand(n, generator=generator) * (height - h)
    return torch.stack([x0, y0, w, h], dim=1)


def resized_crops(x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each image of float ``x`` to its box, resize it to ``size`` (bilinear) and mirror where ``flip``."""
    n, c, height, width = x.shape
    boxes = boxes.to(device=x.device, dtype=x.dtype)
    x0, y0, w, h = boxes.unbind(1)
    sign = 1.0 - 2.0 * flip.to(device=x.device, dtype=x.dtype)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    # Output coordinates in [-1, 1] map onto the box (align_corners=False: -1/+1 are the outer pixel edges).
    theta[:, 0, 0] = sign * w / width
    theta[:, 0, 2] = (2 * x0 + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * y0 + h) / height - 1
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    height, width = x.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return x[..., top : top + size, left : left + size]
