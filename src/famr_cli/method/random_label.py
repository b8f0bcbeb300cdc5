"""Random labelling (RL): train on D_f with random wrong labels together with D_r with its true labels.

Each forget sample gets one label drawn uniformly from the classes other than its own, fixed for
the whole run, and the model is trained with cross-entropy on D_f (relabelled) and D_r mixed in one
shuffled set, so the retained classes are rehearsed while D_f's associations are overwritten.
Golatkar et al., "Eternal Sunshine of the Spotless Net" (CVPR 2020); Graves et al., "Amnesiac
Machine Learning" (AAAI 2021); the recipe (SGD, lr 0.01, 10 epochs, D_f and D_r combined) follows
Fan et al., "SalUn" (ICLR 2024). Drawing only wrong labels (SalUn draws from all K) is our choice:
a "random" label equal to the true one would teach the sample instead of erasing it. SalUn draws
its labels the same way (:func:`famr_cli.method.shared.random_wrong_labels`).

Checked against github.com/OPTML-Group/Unlearn-Saliency (``Classification/unlearn/RL.py``), whose RL
is the SalUn loop without the mask (a forget pass then a retain pass per epoch, labels redrawn per
batch from all K classes); ours mixes both sets in one shuffle with fixed wrong labels.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from famr_cli.method import METHODS, UnlearnContext, UnlearningMethod, UnlearnReport
from famr_cli.method.shared import RetainTrainingSettings, random_wrong_labels, train_with_ce


@METHODS.register("random_label")
class RandomLabel(UnlearningMethod[RetainTrainingSettings]):
    def unlearn(self, model: nn.Module, ctx: UnlearnContext) -> UnlearnReport:
        s = self.settings
        forget, retain = ctx.split.forget_train, ctx.split.retain_train
        labels = random_wrong_labels(ctx.data.y_train, forget, ctx.data.num_classes, ctx.seed)
        rows = torch.cat([forget, retain])
        result = train_with_ce(
            model, ctx, s, rows, augment=s.augment, bn="train", desc="random_label", labels=labels, divergence_hint="lower method.lr"
        )
        return UnlearnReport(
            epoch_losses=result.epoch_losses,
            certificate={"steps": result.steps, "relabelled_samples": len(forget), "retain_samples": len(retain)},
        )
