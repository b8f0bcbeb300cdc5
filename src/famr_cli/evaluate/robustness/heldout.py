"""Held-out indistinguishability: do the model's outputs on D_f look like its outputs on never-seen data?

D_f is compared with class-matched held-out images: the forgotten-class test images (class
forgetting), the test images of D_f's classes (sample forgetting), the stylized test images
(style). Figures: the two-sample Kolmogorov-Smirnov statistic (SciPy) on per-example confidence
(the top softmax probability) and on loss (cross-entropy of the label), and the ROC AUC
(scikit-learn) of a loss-threshold attack that calls low-loss images members of D_f. Retrain sees
neither set, so its AUC is near 0.5; a perfect unlearner matches Retrain, not zero.
``privleak`` = 100 (AUC - AUC_Retrain) / AUC_Retrain, the form of MUSE's PrivLeak (Shi et al. 2024).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.stats import ks_2samp
from sklearn.metrics import roc_auc_score

from famr_cli.evaluate.robustness import register
from famr_cli.evaluate.robustness.base import CheckContext, ModelView, RobustnessCheck
from famr_cli.evaluate.unlearning_metrics import LOG_EPS


def per_example(probs: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, loss) per row: the top probability and -log p_label."""
    p = probs.double()
    confidence = p.max(dim=1).values
    loss = -torch.log(p.gather(1, labels.long().unsqueeze(1)).squeeze(1).clamp_min(LOG_EPS))
    return confidence.numpy(), loss.numpy()


@register
class HeldOut(RobustnessCheck):
    name = "heldout"

    def measure(self, view: ModelView, ctx: CheckContext) -> dict[str, Any]:
        out = view.outputs
        if len(out["forget_labels"]) == 0 or len(out["heldout_labels"]) == 0:
            return {"applicable": False}
        conf_f, loss_f = per_example(out["forget_probs"], out["forget_labels"])
        conf_h, loss_h = per_example(out["heldout_probs"], out["heldout_labels"])
        members = np.r_[np.ones(len(loss_f)), np.zeros(len(loss_h))]
        return {
            "ks_confidence": float(ks_2samp(conf_f, conf_h).statistic),
            "ks_loss": float(ks_2samp(loss_f, loss_h).statistic),
            "auc": float(roc_auc_score(members, -np.r_[loss_f, loss_h])),
            "n_forget": len(loss_f),
            "n_heldout": len(loss_h),
        }

    def headline(self, unlearned: dict[str, Any], vs_retrain: dict[str, Any]) -> dict[str, Any]:
        return {"heldout_auc": unlearned.get("auc"), "privleak": vs_retrain.get("privleak")}

    def compare(self, unlearned: dict[str, Any], reference: dict[str, Any], views: dict[str, ModelView]) -> dict[str, Any]:
        if "auc" not in unlearned or "auc" not in reference:
            return {}
        return {
            "privleak": 100.0 * (unlearned["auc"] - reference["auc"]) / reference["auc"],
            "ks_confidence_gap": unlearned["ks_confidence"] - reference["ks_confidence"],
            "ks_loss_gap": unlearned["ks_loss"] - reference["ks_loss"],
        }
