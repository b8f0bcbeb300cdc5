"""Random labelling (RL): train on D_f with random wrong labels together with D_r with its true labels.

Each forget sample gets one label drawn uniformly from the classes other than its own, fixed for
the whole run, and the model is trained with cross-entropy on D_f (relabelled) and D_r mixed in one
shuffled set, so the retained classes are rehearsed while D_f's associations are overwritten.
Golatkar et al., "Eternal Sunshine of the Spotless Net" (CVPR 2020); Graves et al., "Amnesiac
Machine Learning" (AAAI 2021); the recipe (SGD, lr 0.01, 10 epochs, D_f and D_r combined) follows
Fan et al., "SalUn" (ICLR 2024). Drawing only wrong labels (SalUn draws from all K) is our choice:
a "random" label equal to the true one would teach the sample instead of erasing it.

Checked against github.com/OPTML-Group/Unlearn-Saliency (``Classification/unlearn/RL.py``), whose RL
is the SalUn loop without the mask (a forget pass then a retain pass per epoch, labels redrawn per
batch from all K classes); ours mixes both sets in one shuffle with fixed wrong labels.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from famr_cli.errors import FamrError
from famr_cli.method import METHODS, UnlearnContext, UnlearningMethod, UnlearnReport
from famr_cli.method.finetune import check_training_options, train_with_ce


def random_wrong_labels(y_train: torch.Tensor, forget: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """A copy of ``y_train`` whose ``forget`` rows hold a label drawn uniformly from the other classes.

    Adding an offset in [1, K-1] modulo K maps each true label onto every other class with equal
    probability and never onto itself.
    """
    if num_classes < 2:
        raise FamrError(
            f"method=random_label needs at least two classes to draw a wrong label from (got {num_classes}); use another method."
        )
    generator = torch.Generator().manual_seed(seed)
    forget = forget.cpu()
    offsets = torch.randint(1, num_classes, (len(forget),), generator=generator)
    labels = y_train.clone()
    labels[forget] = ((y_train[forget].cpu() + offsets) % num_classes).to(labels.dtype).to(labels.device)
    return labels


@METHODS.register("random_label")
class RandomLabel(UnlearningMethod):
    def validate(self) -> None:
        check_training_options(self.cfg, suggested_lr=0.01)

    def unlearn(self, model: nn.Module, ctx: UnlearnContext) -> UnlearnReport:
        forget, retain = ctx.split.forget_train, ctx.split.retain_train
        labels = random_wrong_labels(ctx.data.y_train, forget, ctx.data.num_classes, ctx.seed)
        result = train_with_ce(
            model, ctx, self.cfg, torch.cat([forget, retain]), desc="random_label", labels=labels, divergence_hint="lower method.lr"
        )
        return UnlearnReport(
            epoch_losses=result.epoch_losses,
            certificate={"steps": result.steps, "relabelled_samples": len(forget), "retain_samples": len(retain)},
        )
