"""Style forgetting: a seeded subset of training images is stylized before the original
model is trained, optionally relabelled to one class (a poisoning / backdoor trigger); D_f = those images.

Transforms are pure, deterministic and vectorised on uint8 N x C x H x W tensors:

- ``grayscale``: ITU-R BT.601 luma (0.299 R + 0.587 G + 0.114 B, rounded) copied to all three channels;
  3-channel data only (on 1-channel data it would be the identity).
- ``sepia``: the standard sepia matrix (rows .393 .769 .189 / .349 .686 .168 / .272 .534 .131),
  rounded and clamped to 255; 3-channel data only.
- ``invert``: 255 - x.
- ``watermark`` (ours): a square patch of side ``max(2, round(H / 8))`` in the bottom-right corner,
  a pixel-level checkerboard (255 where row + column, counted from the patch's top-left, is even,
  else 0) on every channel; all other pixels are untouched. With a crop size (images stored larger
  than the model sees) a random training crop can cut the patch off; the test crop is central.

The test set stays clean: ``forget_test`` is empty and ``retain_test`` is every test index; the
pipeline additionally scores the whole test set with the style applied (``stylized_test_acc``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from omegaconf import DictConfig

from famr_cli.dataset import DatasetShape, ImageData
from famr_cli.errors import FamrError
from famr_cli.forget import FORGET_SPECS, ForgetSpec, ForgetSplit
from famr_cli.forget.by_sample import _percent, check_fraction, check_seed, draw_fraction

LUMA = torch.tensor([0.299, 0.587, 0.114])
SEPIA = torch.tensor(
    [
        [0.393, 0.769, 0.189],
        [0.349, 0.686, 0.168],
        [0.272, 0.534, 0.131],
    ]
)


def _rgb(x: torch.Tensor, name: str) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise FamrError(f"forget.style={name} needs 3-channel (RGB) images, got shape {tuple(x.shape)}; use invert or watermark.")


def grayscale(x: torch.Tensor) -> torch.Tensor:
    _rgb(x, "grayscale")
    luma = torch.einsum("nchw,c->nhw", x.float(), LUMA).round().clamp_(0, 255).to(torch.uint8)
    return luma.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


def sepia(x: torch.Tensor) -> torch.Tensor:
    _rgb(x, "sepia")
    return torch.einsum("oc,nchw->nohw", SEPIA, x.float()).round().clamp_(0, 255).to(torch.uint8)


def invert(x: torch.Tensor) -> torch.Tensor:
    return 255 - x


def watermark_side(height: int) -> int:
    return max(2, round(height / 8))


def watermark(x: torch.Tensor) -> torch.Tensor:
    side = watermark_side(x.shape[-2])
    idx = torch.arange(side)
    patch = torch.where((idx[:, None] + idx[None, :]) % 2 == 0, 255, 0).to(x.dtype)
    out = x.clone()
    out[..., -side:, -side:] = patch
    return out


STYLES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "grayscale": grayscale,
    "sepia": sepia,
    "invert": invert,
    "watermark": watermark,
}


def get_style(name, in_chans: int) -> Callable[[torch.Tensor], torch.Tensor]:
    if not isinstance(name, str) or name not in STYLES:
        raise FamrError(f"Unknown forget.style {name!r}; use one of: {', '.join(STYLES)}.")
    if name in ("grayscale", "sepia") and in_chans != 3:
        hint = "it would leave single-channel images unchanged" if name == "grayscale" else "it is defined on RGB images"
        raise FamrError(f"forget.style={name} needs 3-channel images but this dataset has {in_chans} ({hint}); use invert or watermark.")
    return STYLES[name]


def resolve_relabel(value, class_names: list[str]) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < len(class_names):
            raise FamrError(
                f"forget.relabel_to={value} is out of range; the dataset has classes 0..{len(class_names) - 1}, pick one of those or null."
            )
        return value
    if str(value) in class_names:
        return class_names.index(str(value))
    raise FamrError(f"Unknown class {value!r} in forget.relabel_to; use null, an id, or one of: {', '.join(class_names)}.")


@FORGET_SPECS.register("style")
class StyleForget(ForgetSpec):
    modifies_training_data = True

    def check(self, cfg: DictConfig, shape: DatasetShape) -> None:
        """The checks :meth:`split` makes that need no data."""
        get_style(cfg.get("style"), shape.in_chans)
        resolve_relabel(cfg.get("relabel_to"), shape.class_names)
        check_fraction(cfg.get("fraction"))
        check_seed(cfg.get("seed"))

    def split(self, cfg: DictConfig, data: ImageData) -> ForgetSplit:
        style = get_style(cfg.get("style"), data.in_chans)
        relabel_to = resolve_relabel(cfg.get("relabel_to"), data.class_names)
        num_train = len(data.y_train)
        chosen = draw_fraction(cfg.get("fraction"), num_train, cfg.get("seed"))

        in_forget = torch.zeros(num_train, dtype=torch.bool)
        in_forget[chosen] = True
        forget_train = in_forget.nonzero().squeeze(1)  # sorted
        x_train = data.x_train.clone()  # a plain in-memory copy, also of memory-mapped data
        x_train[forget_train] = style(x_train[forget_train])
        y_train = data.y_train.clone()
        if relabel_to is not None:
            y_train[forget_train] = relabel_to

        description = f"{cfg.style} on {num_train:,} × {_percent(cfg.fraction)} = {len(forget_train):,} training images (seed {cfg.seed})"
        if relabel_to is not None:
            description += f", relabelled to {data.class_names[relabel_to]}"
        return ForgetSplit(
            forget_train=forget_train,
            retain_train=(~in_forget).nonzero().squeeze(1),
            forget_test=torch.empty(0, dtype=torch.long),
            retain_test=torch.arange(len(data.y_test)),
            description=description,
            forgotten_classes=[],
            x_train=x_train,
            y_train=y_train,
            style=style,
            relabel_to=relabel_to,
        )
