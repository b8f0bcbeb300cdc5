"""Builders over timm's model factory: users name timm architectures they already know."""

from __future__ import annotations

import timm
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf

from famr_cli.backbone import BACKBONES, Backbone
from famr_cli.errors import FamrError

# Images up to this size get the small-image variants (CIFAR stem, ViT patch 4).
SMALL_IMAGE_MAX = 64


def _create(cfg: DictConfig, num_classes: int, in_chans: int, **overrides) -> nn.Module:
    kwargs = OmegaConf.to_container(cfg.kwargs, resolve=True) if cfg.get("kwargs") is not None else {}
    kwargs.update(overrides)
    pretrained = bool(cfg.get("pretrained", False))
    if cfg.timm_name not in timm.list_models():
        raise FamrError(f"timm has no model '{cfg.timm_name}': set backbone.timm_name to a name from timm.list_models().")
    try:
        return timm.create_model(cfg.timm_name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs)
    except Exception as err:
        if not pretrained:
            raise
        # Weights come from the Hugging Face hub; offline that fails deep inside huggingface_hub.
        raise FamrError(
            f"backbone.pretrained=true needs timm's weights for {cfg.timm_name}, which could not be fetched "
            f"({type(err).__name__}); run once with internet access (or a filled HF cache) or set backbone.pretrained=false."
        ) from None


@BACKBONES.register("resnet")
class ResNet(Backbone):
    def build(self, cfg: DictConfig, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
        stem = cfg.get("stem", "auto")
        if stem == "auto":
            stem = "cifar" if img_size <= SMALL_IMAGE_MAX else "imagenet"
        if stem not in ("cifar", "imagenet"):
            raise FamrError(f"backbone.stem must be auto, cifar or imagenet (got '{stem}').")
        model = _create(cfg, num_classes, in_chans)
        if stem == "cifar":
            # Small images lose everything to a 7x7 stride-2 conv plus max-pool; the CIFAR stem keeps
            # full resolution into the first stage.
            stem_width = model.conv1.out_channels
            model.conv1 = nn.Conv2d(in_chans, stem_width, kernel_size=3, stride=1, padding=1, bias=False)
            model.maxpool = nn.Identity()
        return model


@BACKBONES.register("vit")
class ViT(Backbone):
    def build(self, cfg: DictConfig, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
        patch = cfg.get("patch_size", "auto")
        if patch == "auto":
            patch = 4 if img_size <= SMALL_IMAGE_MAX else 16
        patch = int(patch)
        if patch < 1 or img_size % patch:
            raise FamrError(f"backbone.patch_size={patch} does not divide the {img_size}px images; pick a divisor of {img_size}.")
        return _create(cfg, num_classes, in_chans, img_size=img_size, patch_size=patch)


@BACKBONES.register("timm")
class AnyTimm(Backbone):
    """Any timm model as timm builds it, for families without a builder of their own."""

    def build(self, cfg: DictConfig, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
        return _create(cfg, num_classes, in_chans)
