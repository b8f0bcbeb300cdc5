"""Builders over timm's model factory: users name timm architectures they already know."""

from __future__ import annotations

import timm
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf

from famr_cli.backbone import BACKBONES
from famr_cli.errors import FamrError


def _create(cfg: DictConfig, num_classes: int, in_chans: int, **overrides) -> nn.Module:
    kwargs = OmegaConf.to_container(cfg.get("kwargs") or {}, resolve=True)
    kwargs.update(overrides)
    try:
        return timm.create_model(
            cfg.timm_name, pretrained=bool(cfg.get("pretrained", False)), num_classes=num_classes, in_chans=in_chans, **kwargs
        )
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise FamrError(f"timm has no model '{cfg.timm_name}': set backbone.timm_name to a name from timm.list_models().") from None
        raise


@BACKBONES.register("resnet")
def build_resnet(cfg: DictConfig, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    model = _create(cfg, num_classes, in_chans)
    if cfg.get("stem", "imagenet") == "cifar":
        # Small images lose everything to a 7x7 stride-2 conv plus max-pool; the CIFAR stem keeps
        # full resolution into the first stage.
        stem_width = model.conv1.out_channels
        model.conv1 = nn.Conv2d(in_chans, stem_width, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    return model


@BACKBONES.register("vit")
def build_vit(cfg: DictConfig, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    if img_size % cfg.kwargs.patch_size:
        raise FamrError(
            f"backbone.kwargs.patch_size={cfg.kwargs.patch_size} does not divide the {img_size}px images; pick a divisor of {img_size}."
        )
    return _create(cfg, num_classes, in_chans, img_size=img_size)


@BACKBONES.register("timm")
def build_any_timm(cfg: DictConfig, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    return _create(cfg, num_classes, in_chans)
