"""Backbones: timm architectures built from a config, sized to the dataset's images and classes."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn
from omegaconf import DictConfig, OmegaConf

from famr_cli.errors import FamrError
from famr_cli.registry import Registry

# builder(cfg, num_classes, in_chans, img_size) -> nn.Module
BackboneBuilder = Callable[[DictConfig, int, int, int], nn.Module]
BACKBONES: Registry[BackboneBuilder] = Registry("backbone builder", "backbone.builder")


def build_backbone(cfg: DictConfig, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    return BACKBONES.get(cfg.builder)(cfg, num_classes, in_chans, img_size)


def build_skeleton(cfg: DictConfig, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    """An untrained copy of the backbone (no weight download) for these images and classes, built only
    to check that the two fit; any failure becomes a :class:`FamrError` naming the backbone and the images."""
    try:
        return build_backbone(OmegaConf.merge(cfg, {"pretrained": False}), num_classes, in_chans, img_size)
    except FamrError:
        raise
    except Exception as err:  # e.g. a timm kwarg of the wrong type, or a size timm cannot lay out
        reason = str(err).strip().splitlines()[0].rstrip(".") if str(err).strip() else type(err).__name__
        raise FamrError(
            f"backbone={cfg.get('name')} cannot be built for {img_size}px {in_chans}-channel images with {num_classes} classes "
            f"({type(err).__name__}: {reason}); check backbone.kwargs or pick another backbone."
        ) from None


def classifier_parameter_names(model: nn.Module) -> set[str]:
    """Names of the classifier head's parameters, found through timm's own ``get_classifier``."""
    head = model.get_classifier()
    head_ids = {id(p) for p in head.parameters()}
    return {name for name, p in model.named_parameters() if id(p) in head_ids}


from famr_cli.backbone import timm_models  # noqa: E402,F401
