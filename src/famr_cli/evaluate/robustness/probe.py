"""Linear probe on frozen pre-logit features, and linear CKA between models' features.

The probe is a multinomial logistic regression (scikit-learn, L2, ``C``) on standardized features of
the probe set: held-out, class-balanced images every model sees the same way, never D_f's training
images, so Retrain's probe is fair. Its accuracy on the forgotten images (``probe_forget_acc``; the
held-out forgotten-class images for class forgetting, the rest of D_f for sample forgetting) says
whether the features still separate what the output layer no longer predicts.

Linear CKA (Kornblith et al., ICML 2019, eq. 5) between two models' features on the same forgotten
images: 1 means the same representation up to rotation and scale.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from famr_cli.checks import number, whole
from famr_cli.evaluate.robustness import register
from famr_cli.evaluate.robustness.base import CheckContext, ModelView, RobustnessCheck


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float | None:
    """||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) for feature matrices with one row per image."""
    if len(x) < 2 or len(x) != len(y):
        return None
    xc = x.double() - x.double().mean(dim=0)
    yc = y.double() - y.double().mean(dim=0)
    denom = torch.linalg.matrix_norm(xc.T @ xc) * torch.linalg.matrix_norm(yc.T @ yc)
    if denom <= 0:
        return None
    return (torch.linalg.matrix_norm(yc.T @ xc) ** 2 / denom).item()


@register
class LinearProbe(RobustnessCheck):
    name = "probe"
    needs_features = True

    def __init__(self, C: float = 1.0, max_iter: int = 1000):
        self.C = number(C, "evaluate.robustness.probe.C", 1.0, positive=True)
        self.max_iter = whole(max_iter, "evaluate.robustness.probe.max_iter", 1000, minimum=1)

    def measure(self, view: ModelView, ctx: CheckContext) -> dict[str, Any]:
        sets = ctx.sets
        features = view.features
        scaler = StandardScaler().fit(features["probe"].double().numpy())
        probe = LogisticRegression(C=self.C, max_iter=self.max_iter)
        probe.fit(scaler.transform(features["probe"].double().numpy()), sets.probe_y.numpy())

        def acc(name: str, labels: torch.Tensor) -> float | None:
            if len(labels) == 0:
                return None
            pred = probe.predict(scaler.transform(features[name].double().numpy()))
            return 100.0 * float(np.mean(pred == labels.numpy()))

        return {
            "probe_forget_acc": acc("forget", sets.forget_y),
            "probe_retain_acc": acc("retain", sets.retain_y),
            "probe_fit_images": len(sets.probe_y),
        }

    def headline(self, unlearned: dict[str, Any], vs_retrain: dict[str, Any]) -> dict[str, Any]:
        return {
            "probe_forget_acc": unlearned.get("probe_forget_acc"),
            "probe_forget_gap": vs_retrain.get("probe_forget_acc_gap"),
            "cka_vs_retrain": vs_retrain.get("cka_vs_retrain"),
        }

    def compare(self, unlearned: dict[str, Any], reference: dict[str, Any], views: dict[str, ModelView]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("probe_forget_acc", "probe_retain_acc"):
            if unlearned.get(key) is not None and reference.get(key) is not None:
                out[f"{key}_gap"] = unlearned[key] - reference[key]
        mine = views["unlearned"].features.get("forget")
        for other in ("retrain", "original"):
            theirs = views.get(other).features.get("forget") if views.get(other) is not None else None
            if mine is not None and theirs is not None:
                out[f"cka_vs_{other}"] = linear_cka(mine, theirs)
        return out
