"""Relearning attacks: how much of the forgotten data a few labelled images bring back.

(a) k-shot fine-tuning: a copy of the model takes ``steps`` full-batch SGD steps (cross-entropy) on
k labelled images per forgotten class (with ``with_retained``, k held-out images of every retained
class join the batch), updating the whole model ("full") or its classifier head ("head"), then is
scored on held-out forgotten images (sets.py says which). The copy stays in eval
mode, so batch-norm statistics are not re-estimated from a handful of one-class images.
(b) Prototype relearning, no training (after Spotter's recipe, ICML 2026): each forgotten class's head
row becomes ``(1 - mix) * w_c + mix * s * mu_c``, with ``mu_c`` the mean pre-logit feature of its k
images and ``s`` scaling it to the head's mean row norm, and its bias becomes the mean bias of the
other classes (a prototype carries no bias, and a suppressing bias is exactly what the attack
undoes). The scaling and the bias rule are ours.

Every figure is also measured on Retrain under the identical attack; ``residual_*`` is the excess
(unlearned − Retrain) in points: what the method left recoverable beyond a never-seen class.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from famr_cli.checks import flag, number, whole
from famr_cli.errors import FamrError
from famr_cli.evaluate.certificate.head import classifier_head
from famr_cli.evaluate.robustness import register
from famr_cli.evaluate.robustness.base import CheckContext, ModelView, RobustnessCheck, accuracy_on, percent_correct
from famr_cli.evaluate.robustness.sets import first_per_class


@register
class Relearn(RobustnessCheck):
    name = "relearn"
    needs_features = True

    def __init__(
        self,
        shots=(5, 25),
        steps: int = 10,
        lr: float = 0.003,
        momentum: float = 0.9,
        prototype_mix: float = 0.5,
        with_retained: bool = True,
        full_model_shots=(5,),
    ):
        if isinstance(shots, int) or not shots:
            shots = [shots] if isinstance(shots, int) else []
        if not shots:
            raise FamrError("evaluate.robustness.relearn.shots needs at least one k (e.g. [5, 25]).")
        self.shots = tuple(whole(k, "evaluate.robustness.relearn.shots", "[5, 25]", minimum=1) for k in shots)
        self.steps = whole(steps, "evaluate.robustness.relearn.steps", 10, minimum=1)
        self.lr = number(lr, "evaluate.robustness.relearn.lr", 0.01, positive=True)
        self.momentum = number(momentum, "evaluate.robustness.relearn.momentum", 0.9, minimum=0.0)
        self.prototype_mix = number(prototype_mix, "evaluate.robustness.relearn.prototype_mix", 0.5, minimum=0.0)
        self.with_retained = flag(with_retained, "evaluate.robustness.relearn.with_retained")
        full = [full_model_shots] if isinstance(full_model_shots, int) else list(full_model_shots or [])
        self.full_model_shots = tuple(whole(k, "evaluate.robustness.relearn.full_model_shots", "[5]", minimum=1) for k in full)
        if self.prototype_mix > 1:
            raise FamrError(f"evaluate.robustness.relearn.prototype_mix must be in [0, 1] (got {prototype_mix}); try 0.5.")

    def measure(self, view: ModelView, ctx: CheckContext) -> dict[str, Any]:
        sets = ctx.sets
        if not sets.relearnable or view.model is None:
            return {"applicable": False}
        model = view.model
        feats = view.features
        head_logits = self._head_logits(model)
        figures: dict[str, Any] = {"forget_acc_before": percent_correct(head_logits(feats["forget"]), sets.forget_y)}
        for k in self.shots:
            rows = first_per_class(torch.arange(len(sets.pool_y)), sets.pool_y, k)
            x, y = sets.pool_x[rows], sets.pool_y[rows]
            figures[f"k{k}_images"] = len(y)
            batch_x, batch_y, batch_f = x, y, feats["pool"][rows]
            if self.with_retained and sets.anchor_y is not None and len(sets.anchor_y):
                kept = first_per_class(torch.arange(len(sets.anchor_y)), sets.anchor_y, k)
                batch_x, batch_y = torch.cat([x, sets.anchor_x[kept]]), torch.cat([y, sets.anchor_y[kept]])
                batch_f = torch.cat([batch_f, feats["anchor"][kept]])
            if k in self.full_model_shots:  # the costly attack: steps x batch forward-backward passes through the model
                attacked = self._fine_tune(model, batch_x, batch_y, ctx)
                figures[f"full_k{k}_forget_acc"] = accuracy_on(attacked, sets.forget_x, sets.forget_y, ctx)
                figures[f"full_k{k}_retain_acc"] = accuracy_on(attacked, sets.retain_x, sets.retain_y, ctx)
                del attacked
            # Head only: the frozen body in eval mode maps each image to fixed features, so the attack
            # trains the head on them directly (the same steps as through the model, without its forward passes).
            tuned = self._fine_tune_head(model, batch_f, batch_y)
            figures[f"head_k{k}_forget_acc"] = percent_correct(tuned(feats["forget"]), sets.forget_y)
            figures[f"head_k{k}_retain_acc"] = percent_correct(tuned(feats["retain"]), sets.retain_y)
            forget_logits, retain_logits = self._prototype_logits(model, feats["pool"][rows], y, feats)
            figures[f"prototype_k{k}_forget_acc"] = percent_correct(forget_logits, sets.forget_y)
            figures[f"prototype_k{k}_retain_acc"] = percent_correct(retain_logits, sets.retain_y)
        return figures

    @staticmethod
    def _head_weights(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        head = classifier_head(model)
        weight = head.weight.detach().float().cpu().clone()
        bias = torch.zeros(len(weight)) if head.bias is None else head.bias.detach().float().cpu().clone()
        return weight, bias

    def _head_logits(self, model: torch.nn.Module):
        weight, bias = self._head_weights(model)
        return lambda features: features.float() @ weight.T + bias

    def _fine_tune_head(self, model: torch.nn.Module, features: torch.Tensor, y: torch.Tensor):
        weight, bias = (t.requires_grad_(True) for t in self._head_weights(model))
        optimizer = torch.optim.SGD([weight, bias], lr=self.lr, momentum=self.momentum)
        inputs = features.float()
        with torch.enable_grad():
            for _ in range(self.steps):
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(inputs @ weight.T + bias, y).backward()
                optimizer.step()
        weight, bias = weight.detach(), bias.detach()
        return lambda f: f.float() @ weight.T + bias

    def _fine_tune(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: CheckContext) -> torch.nn.Module:
        attacked = copy.deepcopy(model).eval()
        params = list(attacked.parameters())
        for p in params:
            p.requires_grad_(True)
        optimizer = torch.optim.SGD(params, lr=self.lr, momentum=self.momentum)
        inputs = torch.cat(ctx.batches(x))
        target = y.to(inputs.device)
        with torch.enable_grad():
            for _ in range(self.steps):
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(attacked(inputs), target).backward()
                optimizer.step()
        return attacked

    def _prototype_logits(self, model, shot_features, shot_labels, features) -> tuple[torch.Tensor, torch.Tensor]:
        weight, bias = self._head_weights(model)
        row_norm = weight.norm(dim=1).mean()
        classes = shot_labels.unique()
        others = torch.ones(len(bias), dtype=torch.bool)
        others[classes] = False
        neutral_bias = bias[others].mean() if others.any() else bias.mean()
        mix = self.prototype_mix
        for c in classes.tolist():
            mu = shot_features[shot_labels == c].float().mean(dim=0)
            weight[c] = (1 - mix) * weight[c] + mix * mu * (row_norm / mu.norm().clamp_min(1e-12))
            bias[c] = neutral_bias
        return features["forget"].float() @ weight.T + bias, features["retain"].float() @ weight.T + bias

    def headline(self, unlearned: dict[str, Any], vs_retrain: dict[str, Any]) -> dict[str, Any]:
        if not unlearned.get("applicable", True):
            return {}
        k = min(self.shots)
        return {
            "relearn_k": k,
            "relearn_forget_acc": unlearned.get(f"full_k{k}_forget_acc"),
            "relearn_residual": vs_retrain.get(f"residual_full_k{k}"),
            "prototype_forget_acc": unlearned.get(f"prototype_k{k}_forget_acc"),
            "prototype_residual": vs_retrain.get(f"residual_prototype_k{k}"),
        }

    def compare(self, unlearned: dict[str, Any], reference: dict[str, Any], views: dict[str, ModelView]) -> dict[str, Any]:
        if not unlearned.get("applicable", True) or not reference.get("applicable", True):
            return {}
        out = {}
        for key, value in unlearned.items():
            if key.endswith("_forget_acc") and value is not None and reference.get(key) is not None:
                out[f"residual_{key.removesuffix('_forget_acc')}"] = value - reference[key]
        return out
