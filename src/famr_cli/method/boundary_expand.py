"""Boundary Expanding: widen the head by one shadow class, fine-tune D_f into it, prune it again.

Chen, Gao, Liu, Peng & Wang, "Boundary Unlearning: Rapid Forgetting of Deep Networks via Shifting the
Decision Boundary", CVPR 2023. Official code: the authors' Dropbox archive ``Boundary-Unlearning-Code.zip``
(linked from their README), checked in its GitHub copies TY-LEE-KR/Boundary-Unlearning-Code at commit
86c2f1f and shreyasudaya/Boundary-Unlearning at 6f3ec1a (identical): ``boundary_expanding`` in
``boundary_unlearning.py``, ``init_params`` in ``models.py``, ``optimizer_picker`` in ``trainer.py``,
the arguments of ``main.py``.

The K-way linear head becomes (K+1)-way: its K rows are kept and a new "shadow" row is added. The
whole widened network (features and head) is fine-tuned with cross-entropy towards the shadow class
K on every sample of D_f, which moves D_f's features away from the forgotten class's region; then the
shadow row is pruned, so the head has its K rows again, as the fine-tuning left them. Only D_f is read,
and the method is defined for class forgetting only (the paper's setting).

famr widens the head without rebuilding the model: during the fine-tuning a forward hook on the head
(timm's ``get_classifier()``, an ``nn.Linear``) appends the shadow row's logit, computed from the head's
own input, to the model's K logits, and the optimizer steps the model's parameters and the shadow
row together. That is exactly a (K+1)-row layer whose first K rows are the head; pruning is removing
the hook, so the model keeps its modules, its head object and its K outputs.

Defaults are the official CIFAR-10 recipe: the widened layer initialised as theirs (``init_params``:
Xavier-normal weights of the (K+1)-row layer, std sqrt(2 / (fan_in + K + 1)), zero bias; then the K
rows overwritten by the original head, so only the shadow row keeps the fresh draw, here seeded by
the run's seed); SGD lr 1e-5, momentum 0.9, no weight decay, constant lr; 10 epochs over D_f in
shuffled batches of 64; no augmentation; BatchNorm in train mode (``widen_model.train()``).

What still differs from the official code with the defaults:

- Their first step's forward pass runs before ``widen_model.train()`` is first called, so in whatever
  mode the loaded model was left (eval after their accuracy print); famr runs every step in train mode.
- Their model is the All-CNN of ``models.py`` (its head width hard-coded as 96 = 192 * 0.5); famr widens
  the experiment's backbone's linear head, whatever its width.
- Random streams: the shadow row and D_f's order come from famr's seeded generators, not torch's
  global one and a SubsetRandomSampler.
- Forward passes follow famr's ``precision`` (bf16 autocast on CUDA by default; theirs run fp32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn as nn

from famr_cli.errors import FamrError
from famr_cli.method import METHODS, UnlearnContext, UnlearningMethod, UnlearnReport
from famr_cli.method.shared.pieces import classifier_head, mixed_seed
from famr_cli.method.shared.settings import ScheduledSettings, bn_option, training_options
from famr_cli.method.shared.training import train_with_ce

# Purpose tag mixed into the run's seed for the shadow row's initial weights.
_SHADOW_STREAM = 0x5348_4457  # "SHDW"


def linear_head(model: nn.Module) -> nn.Linear:
    """The model's classifier through timm's ``get_classifier()``, or :class:`FamrError` when it is not one linear layer."""
    head = classifier_head(
        model,
        "method=boundary_expand widens the classifier head, but {model} has no nn.Linear head "
        "through get_classifier() (timm models built with num_classes > 0 have one); pick another method for this model.",
        linear=True,
    )
    return cast(nn.Linear, head)


def shadow_row(head: nn.Linear, seed: int) -> nn.Linear:
    """The shadow class's row: a 1-output layer on the head's input, drawn as one row of the official
    Xavier-normal init of a (K+1)-row layer (std sqrt(2 / (fan_in + K + 1))), bias zero when the head has one."""
    fan_in, rows = head.in_features, head.out_features + 1
    generator = torch.Generator().manual_seed(mixed_seed(seed, _SHADOW_STREAM))
    weight = torch.randn(1, fan_in, generator=generator) * math.sqrt(2.0 / (fan_in + rows))
    shadow = nn.Linear(fan_in, 1, bias=head.bias is not None, device=head.weight.device, dtype=head.weight.dtype)
    with torch.no_grad():
        shadow.weight.copy_(weight)
        if shadow.bias is not None:
            shadow.bias.zero_()
    return shadow


class Widened(nn.Module):
    """``model`` with its head widened by ``shadow``: forward gives K+1 logits, the last the shadow class's.

    ``parameters()`` holds the model's and the shadow row's, so one optimizer steps the whole widened layer.
    """

    def __init__(self, model: nn.Module, head: nn.Linear, shadow: nn.Linear):
        super().__init__()
        self.model, self.shadow = model, shadow
        self._head = [head]  # a list, so the head is not registered twice as a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features: list[torch.Tensor] = []
        handle = self._head[0].register_forward_hook(lambda module, inputs, output: features.append(inputs[0]))
        try:
            logits = self.model(x)
        finally:
            handle.remove()
        if len(features) != 1:
            raise FamrError(
                f"method=boundary_expand needs the classifier head to run once per forward pass (it ran {len(features)} times); "
                "pick another method for this model."
            )
        return torch.cat([logits, self.shadow(features[0]).to(logits.dtype)], dim=1)


@dataclass(frozen=True)
class BoundaryExpandSettings(ScheduledSettings):
    augment: bool
    bn: str

    @classmethod
    def parse(cls, c: dict[str, Any]) -> BoundaryExpandSettings:
        return cls(**training_options(c, suggested_lr=1e-5), bn=bn_option(c["bn"]))


@METHODS.register("boundary_expand")
class BoundaryExpand(UnlearningMethod[BoundaryExpandSettings]):
    forget_specs = ("class",)

    @property
    def data_read(self) -> str:
        return "forget"

    def check_model(self, model: nn.Module) -> None:
        linear_head(model)

    def unlearn(self, model: nn.Module, ctx: UnlearnContext) -> UnlearnReport:
        s = self.settings
        forget, num_classes = ctx.split.forget_train, ctx.data.num_classes
        head = linear_head(model)
        if head.out_features != num_classes:
            raise FamrError(
                f"method=boundary_expand needs a head with one row per class ({num_classes}), but it has {head.out_features}; "
                "pass a model built for these classes."
            )
        # Every forget sample is labelled with the shadow class, index K of the widened output.
        labels = ctx.data.y_train.to(torch.long, copy=True)
        labels[forget.to(labels.device)] = num_classes
        widened = Widened(model, head, shadow_row(head, ctx.seed))
        result = train_with_ce(
            widened, ctx, s, forget, augment=s.augment, bn=s.bn, desc="boundary_expand", labels=labels, divergence_hint="lower method.lr"
        )
        # Pruning: the shadow row goes with ``widened``; the model never held it, so its head keeps K rows.
        return UnlearnReport(
            epoch_losses=result.epoch_losses,
            certificate={"steps": result.steps, "forget_samples": len(forget), "shadow_class": num_classes},
        )
