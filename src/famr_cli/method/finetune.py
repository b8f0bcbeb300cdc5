"""Fine-tuning (FT): keep training the original model on the retained set D_r alone.

The forget set is never shown again, so D_f is forgotten only through catastrophic forgetting.
FT is the standard first baseline of the unlearning literature (Warnecke et al., "Machine
Unlearning of Features and Labels", NDSS 2023; Jia et al., "Model Sparsity Can Simplify Machine
Unlearning", NeurIPS 2023; Fan et al., "SalUn", ICLR 2024). Official recipe: Jia et al.'s code,
github.com/OPTML-Group/Unlearn-Sparse at commit 80ba55d, whose README runs ``--unlearn FT
--unlearn_lr 0.01 --unlearn_epochs 10`` (``unlearn/FT.py`` and ``arg_parser.py``: SGD, momentum 0.9,
weight decay 5e-4, batch 256, the training augmentation, train mode; their lr milestones at epochs
91 and 136 never fire within 10 epochs, so the lr is constant). SalUn's README
(OPTML-Group/Unlearn-Saliency) runs the same ``FT`` and leaves lr and epochs to the user.

What still differs from the official code with the defaults:

- Random streams (batch order, crops and flips) are famr's own seeded ones; the augmentation is the
  experiment's ``train.augment`` (crop 4 px + flip on CIFAR-10, as theirs).
- famr offers no warm-up; ``schedule`` adds cosine and step decay beside the official constant lr.
- Forward passes follow famr's ``precision`` (bf16 autocast on CUDA by default; theirs run fp32).
"""

from __future__ import annotations

import torch.nn as nn

from famr_cli.evaluate.metrics import parameter_distance
from famr_cli.method import METHODS, UnlearnContext, UnlearningMethod, UnlearnReport
from famr_cli.method.shared.settings import RetainTrainingSettings
from famr_cli.method.shared.training import train_with_ce


@METHODS.register("finetune")
class Finetune(UnlearningMethod[RetainTrainingSettings]):
    @property
    def data_read(self) -> str:
        return "retain"  # D_f is never shown again

    def unlearn(self, model: nn.Module, ctx: UnlearnContext) -> UnlearnReport:
        theta0 = [p.detach().clone() for p in model.parameters()]
        retain = ctx.split.retain_train
        s = self.settings
        # bn is no option of FT: it trains on D_r as the original did, BatchNorm statistics included.
        result = train_with_ce(model, ctx, s, retain, augment=s.augment, bn="train", desc="finetune", divergence_hint="lower method.lr")
        return UnlearnReport(
            epoch_losses=result.epoch_losses,
            certificate={
                "steps": result.steps,
                "retain_samples": len(retain),
                "param_dist": parameter_distance([p.detach() for p in model.parameters()], theta0),
            },
        )
