"""Backbones: timm architectures built from a config, sized to the dataset's images and classes.

A ``conf/backbone/<name>.yaml`` names its builder (``builder: resnet``) and the builder's keys.
Another timm model of a known family needs only that YAML file. A new family needs a builder too:
``famr_cli/backbone/<builder>.py`` with one subclass of :class:`Backbone` decorated by
``@BACKBONES.register("<builder>")``. Every module in this package is imported at start-up
(:func:`famr_cli.registry.import_submodules`), so nothing else needs editing. The built model must
offer timm's ``get_classifier()`` (:func:`classifier_parameter_names`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch.nn as nn
from omegaconf import DictConfig, OmegaConf

from famr_cli.errors import FamrError
from famr_cli.registry import Registry, import_submodules


class Backbone(ABC):
    """One builder, made with no arguments; the ``backbone`` section is passed to :meth:`build`."""

    @abstractmethod
    def build(self, cfg: DictConfig, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
        """A model for ``img_size`` px ``in_chans``-channel images and ``num_classes`` outputs; raises
        :class:`FamrError` for a section that cannot give one. Downloads weights only when
        ``cfg.pretrained`` is true."""


BACKBONES: Registry[type[Backbone]] = Registry("backbone builder", "backbone.builder", base=Backbone)


def build_backbone(cfg: DictConfig, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    return BACKBONES.get(cfg.builder)().build(cfg, num_classes, in_chans, img_size)


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


import_submodules(__name__, __path__)
