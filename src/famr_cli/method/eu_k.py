"""EU-k (exact unlearning of the last k layers): re-initialise the last k layers, then train them on D_r.

Goel, Prabhu, Sanyal, Lim, Torr & Kumaraguru, "Towards Adversarial Evaluations for Inexact Machine
Unlearning", arXiv 2201.06640 (2022/2023). Official code: github.com/shash42/Evaluating-Inexact-Unlearning
at commit a45fe02 (``retrain_lastK`` and ``resetFinalResnet`` in ``src/methods.py``, ``_reinit`` in
``src/models.py``, ``train_loop`` and ``train`` in ``src/learn.py``, ``scripts/cifar10-*.sh``). The SCRUB
repository (meghdadk/SCRUB@98ffb11, ``euk_unlearn``: the last ResNet stage, its classifier frozen)
and Deep Unlearn (xcadet/deepunlearn@6830ff6, ``exact_unlearning_k.py``: the last k stages and the
classifier) run it with stages instead of layers.

The first layers stay as trained on all of D; the last k start again from random weights and learn
from D_r alone, so they keep nothing of D_f beyond what the frozen features below them carry.
Which layers are the last k, and which normalisation layers train with them, is CF-k's definition
(:mod:`famr_cli.method.cf_k`, :func:`famr_cli.method.shared.last_layers.last_layers`): the k ``nn.Conv2d`` /
``nn.Linear`` modules nearest the output. As in their ``_reinit``, each of the k layers gets a weight
drawn by ``kaiming_normal_`` (fan-in, ReLU gain: std sqrt(2 / fan_in)) and a zero bias; the
normalisation layers met on the way train but keep their weights and running statistics. The draw
comes from the run's seed on the CPU, so it is the same on every device and rerun.

Defaults are the official CIFAR-10 recipe (their ResNet-110 scripts): k = 10 (see CF-k), SGD, momentum
0.9, weight decay 5e-5, batch 64, the training augmentation, gradient norm clipped at 10, SGDR
(cycles of 1, 2, 4, ... epochs, lr 0.1 down to 5e-3, stepped per epoch), every BatchNorm in train
mode, and 62 epochs: as long as the original's training, which their EU-k matches (``--epochs-rf``
equals the original's ``--epochs``, 62).

What still differs from their code:

- k = 10 keeps their number of layers, not their depth (see CF-k): on resnet_narrow it re-initialises
  fc and the last three stages (10 of 14 layers), on vit_mini every Conv2d and Linear, so EU-k is
  then a retrain from scratch except for the norms and the class and position embeddings.
- Their 62 epochs are the length of their original training; famr's default is the number 62, whatever
  the experiment's ``train.epochs`` is (set ``method.epochs`` to match it).
- When the original was fine-tuned from pretrained weights, their code resets the k layers to those
  weights; famr always draws fresh ones (``backbone.pretrained=true`` included). The SCRUB repository's
  version resets to the original's own initial weights, which famr does not keep.
- A ViT's linear layers get the same Kaiming draw (timm initialises them with std 0.02), and the
  LayerNorm/GroupNorm handling, ``min_lr_factor``, random streams and ``precision`` differ as CF-k's do.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from famr_cli.method import METHODS, UnlearnContext, UnlearningMethod, UnlearnReport
from famr_cli.method.shared.last_layers import LastLayersSettings, check_last_layers, unlearn_last_layers
from famr_cli.method.shared.pieces import mixed_seed

# Purpose tag mixed into the run's seed for the re-initialisation draw.
_REINIT_STREAM = 0x4555_4B52


def reinitialise_(layers: list[nn.Module], seed: int) -> None:
    """Give each of ``layers`` a Kaiming-normal weight (fan-in, ReLU gain) and a zero bias, drawn in order from ``seed``."""
    generator = torch.Generator().manual_seed(mixed_seed(seed, _REINIT_STREAM))
    with torch.no_grad():
        for layer in layers:
            weight = torch.empty(layer.weight.shape)
            # nn.init.kaiming_normal_'s fan-in, ReLU-gain std, drawn with Tensor.normal_ (whose generator= every
            # supported torch accepts; nn.init's takes one from torch 2.2 on).
            fan_in = weight[0].numel()
            weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=generator)
            layer.weight.copy_(weight)
            if layer.bias is not None:
                layer.bias.zero_()


@METHODS.register("eu_k")
class EUk(UnlearningMethod[LastLayersSettings]):
    @property
    def data_read(self) -> str:
        return "retain"  # D_f is never shown again

    def check_model(self, model: nn.Module) -> None:
        check_last_layers(model, self.settings.k, "eu_k")

    def unlearn(self, model: nn.Module, ctx: UnlearnContext) -> UnlearnReport:
        return unlearn_last_layers(model, ctx, self.settings, desc="eu_k", reinitialise=reinitialise_)
