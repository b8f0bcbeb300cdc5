"""Random labelling (RL): cross-entropy on D_f with random labels and on D_r with its true labels.

Training D_f towards random labels overwrites what the model learned from it, while the passes over
D_r rehearse the retained data. Golatkar et al., "Eternal Sunshine of the Spotless Net" (CVPR 2020);
Graves et al., "Amnesiac Machine Learning" (AAAI 2021). The recipe is the RL baseline of Fan et al.,
"SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency" (ICLR 2024).

Defaults (``relabel=per_batch``, ``passes=sequential``) follow the official code's CIFAR-10 recipe,
checked against github.com/OPTML-Group/Unlearn-Saliency at commit a6e89fd
(``Classification/unlearn/RL.py``, its cifar10/svhn branch; optimizer, schedule and defaults from
``Classification/unlearn/impl.py`` and ``Classification/arg_parser.py``): each epoch, one pass over
D_f whose every batch gets fresh labels drawn uniformly from all K classes (the true label can be
drawn), then one pass over D_r with true labels; both passes shuffled and augmented with the training
augmentation, BatchNorm in train mode; SGD, momentum 0.9, weight decay 5e-4, lr 0.01, 10 epochs,
batch 256, constant lr (their MultiStepLR milestones, epochs 91 and 136, lie beyond epoch 10).

famr's earlier behaviour stays reachable: ``relabel=fixed_wrong`` gives each forget sample one label
drawn once from the other K-1 classes and kept for the run; ``passes=mixed`` shuffles D_f
(relabelled) and D_r together into one set. ``relabel=fixed_wrong passes=mixed`` is exactly the
previous default.

What still differs from the official code with the defaults:

- Random streams: the official code draws labels from torch's global generator and batches from
  DataLoader shuffles and torchvision transforms; famr draws each D_f batch's labels from
  (seed, step) and its orders and crops from its own seeded generators, so a seed does not reproduce
  the official run's batches, only their distribution.
- Augmentation is the experiment's ``train.augment`` (crop 4 px + flip on CIFAR-10 with ResNet-18,
  as in the official code; other experiments use their own, possibly none), applied when ``augment``
  is true.
- The official code branches per dataset: for CIFAR-100 and TinyImageNet it draws all of D_f's
  labels once per epoch from all K classes and shuffles D_f and D_r together (other datasets match
  neither branch). famr uses the CIFAR-10 recipe for every dataset; ``passes=mixed`` comes close to
  that branch, but no setting redraws labels once per epoch.
- The official learning-rate warm-up option (off by default) is absent, and famr offers cosine and
  step schedules besides the constant default.
- The epoch loss famr logs averages the batches of both passes (the official meter tracks the retain
  pass only), and forward passes follow famr's ``precision`` (bf16 autocast on CUDA by default; the
  official code runs fp32).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn as nn

from famr_cli.method import METHODS, UnlearnContext, UnlearningMethod, UnlearnReport
from famr_cli.method.shared.relabel import random_label_batches, relabel_options
from famr_cli.method.shared.settings import RetainTrainingSettings, training_options
from famr_cli.method.shared.training import train_on_batches


@dataclass(frozen=True)
class RandomLabelSettings(RetainTrainingSettings):
    """FT's options, and how D_f is relabelled (``relabel``) and passed with D_r (``passes``)."""

    relabel: str
    passes: str

    @classmethod
    def parse(cls, c: dict[str, Any]) -> RandomLabelSettings:
        return cls(**training_options(c, suggested_lr=0.01), **relabel_options(c))


@METHODS.register("random_label")
class RandomLabel(UnlearningMethod[RandomLabelSettings]):
    def unlearn(self, model: nn.Module, ctx: UnlearnContext) -> UnlearnReport:
        s = self.settings
        forget, retain = ctx.split.forget_train, ctx.split.retain_train
        batches = random_label_batches(
            ctx, relabel=s.relabel, passes=s.passes, batch_size=s.batch_size, augment=s.augment, method="random_label"
        )
        result = train_on_batches(model, ctx, s, batches, bn="train", desc="random_label", divergence_hint="lower method.lr")
        return UnlearnReport(
            epoch_losses=result.epoch_losses,
            certificate={"steps": result.steps, "relabelled_samples": len(forget), "retain_samples": len(retain)},
        )
