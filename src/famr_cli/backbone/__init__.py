"""Backbones: timm architectures built from a config, sized to the dataset's images and classes."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn
from omegaconf import DictConfig

from famr_cli.registry import Registry

# builder(cfg, num_classes, in_chans, img_size) -> nn.Module
BackboneBuilder = Callable[[DictConfig, int, int, int], nn.Module]
BACKBONES: Registry[BackboneBuilder] = Registry("backbone builder", "backbone.builder")


def build_backbone(cfg: DictConfig, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    return BACKBONES.get(cfg.builder)(cfg, num_classes, in_chans, img_size)


def classifier_parameter_names(model: nn.Module) -> set[str]:
    """Names of the classifier head's parameters, found through timm's own ``get_classifier``."""
    head = model.get_classifier()
    head_ids = {id(p) for p in head.parameters()}
    return {name for name, p in model.named_parameters() if id(p) in head_ids}


from famr_cli.backbone import timm_models  # noqa: E402,F401
