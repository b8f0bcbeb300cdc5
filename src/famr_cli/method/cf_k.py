"""CF-k (catastrophic forgetting of the last k layers): fine-tune only the last k layers on D_r.

Goel, Prabhu, Sanyal, Lim, Torr & Kumaraguru, "Towards Adversarial Evaluations for Inexact Machine
Unlearning", arXiv 2201.06640 (2022/2023). Official code: github.com/shash42/Evaluating-Inexact-Unlearning
at commit a45fe02 (``cat_forget_finetune`` and ``resetFinalResnet`` in ``src/methods.py``, ``train_loop``
and ``train`` in ``src/learn.py``, the options of ``src/unlearn.py``, ``scripts/cifar10-*.sh``). The
SCRUB repository (meghdadk/SCRUB@98ffb11, ``cfk_unlearn``: the last ResNet stage, its classifier frozen)
and Deep Unlearn (xcadet/deepunlearn@6830ff6, ``catastrophic_forgetting_k.py``: the last k stages and
the classifier) run it with stages instead of layers.

A layer, as in the official code, is a ``nn.Conv2d`` or ``nn.Linear`` module. The last k are found by
walking the modules from the output in reverse registration order (:func:`famr_cli.method.shared.last_layers.last_layers`);
the normalisation layers met before the k-th layer train too (a norm registered after a counted layer,
e.g. a BasicBlock's bn2 after conv2, follows it), and every other parameter is frozen. k = 1 is the
classifier head alone. On timm's ResNets (famr's resnet_narrow and resnet_mini: 14 layers; ResNet-18: 21)
a block counts its downsample convolution (where it has one) first, then conv2, then conv1, so fc plus
the last stage is k = 4 (one block per stage) or 6 (ResNet-18). On a ViT (depth d: 4d + 2 layers) each
block holds qkv, proj, fc1 and fc2: k = 1 + 4j is the head, the final LayerNorm and the last j blocks,
all but the first LayerNorm of the earliest of them; the patch embedding is the first layer, and the
class token and position embeddings (no layer's) never train. k must lie between 1 and the backbone's
count of layers, checked before anything trains.

Defaults are the official CIFAR-10 recipe (their ResNet-110 scripts): SGD, momentum 0.9, weight decay
5e-5, batch 64, the training augmentation, 30 epochs, gradient norm clipped at 10, and SGDR
(CosineAnnealingWarmRestarts with cycles of 1, 2, 4, ... epochs, lr from 0.1 down to 5e-3, stepped once
per epoch); the model in train mode, so every BatchNorm's running statistics update, frozen layers' too.
k = 10: their scripts take k from {1, 10} (label noise), {10, 50} (interclass confusion) and 50 (random
samples) on ResNet-110's 110 layers, and 10 fits every famr backbone (vit_mini has exactly 10 layers).
famr keeps their number of layers, not their depth: their k = 10 is the last 5 blocks of ResNet-110's
third stage (about a tenth of the network), famr's k = 10 is fc plus the last three stages of
resnet_narrow (10 of 14 layers) and every layer of vit_mini (CF-k becomes fine-tuning of all but the
embeddings). famr-tune searches k over the whole range.

What still differs from their code:

- k = 10 is a deeper share of famr's shallow backbones than of their ResNet-110 (above).
- The LayerNorm and GroupNorm handling is ours (theirs counts only nn.BatchNorm2d, having no ViT).
- ``min_lr_factor`` is SGDR's floor as a fraction of ``lr`` (theirs: the absolute 5e-3 at lr 0.1), so a
  searched lr keeps the official shape; the floor is the same at the defaults.
- Random streams (batch order, crops) are famr's own; their pad fill is a fixed grey, famr's augmentation
  is the experiment's ``train.augment``; forward passes follow famr's ``precision`` (bf16 autocast on
  CUDA by default; theirs run fp32). Their ResNet-110 is not one of famr's backbones.
"""

from __future__ import annotations

import torch.nn as nn

from famr_cli.method import METHODS, UnlearnContext, UnlearningMethod, UnlearnReport
from famr_cli.method.shared.last_layers import LastLayersSettings, check_last_layers, unlearn_last_layers


@METHODS.register("cf_k")
class CFk(UnlearningMethod[LastLayersSettings]):
    @property
    def data_read(self) -> str:
        return "retain"  # D_f is never shown again

    def check_model(self, model: nn.Module) -> None:
        check_last_layers(model, self.settings.k, "cf_k")

    def unlearn(self, model: nn.Module, ctx: UnlearnContext) -> UnlearnReport:
        return unlearn_last_layers(model, ctx, self.settings, desc="cf_k")
