"""Calibration: expected calibration error on retained test images, prediction entropy on D_f and held-out images.

ECE (Guo et al., ICML 2017): the test images are binned by top probability into ``bins`` equal-width
bins of (0, 1]; ECE = sum_b |B_b|/n * |accuracy(B_b) - mean confidence(B_b)|, in percent. A uniform
output on D_f is itself a fingerprint when never-seen images do not look uniform (Hayes et al.
2024): compare ``entropy_forget`` with ``entropy_heldout``, and both with Retrain's.
"""

from __future__ import annotations

from typing import Any

import torch

from famr_cli.checks import whole
from famr_cli.evaluate.robustness import register
from famr_cli.evaluate.robustness.base import CheckContext, ModelView, RobustnessCheck


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float | None:
    if len(labels) == 0:
        return None
    confidence, pred = probs.double().max(dim=1)
    correct = (pred == labels).double()
    # Bin b holds confidences in (b/bins, (b+1)/bins]; a confidence of exactly 0 cannot occur for a softmax.
    which = (torch.ceil(confidence * bins).long() - 1).clamp(0, bins - 1)
    gap = torch.zeros(bins, dtype=torch.float64).index_add_(0, which, correct - confidence)
    return 100.0 * (gap.abs().sum() / len(labels)).item()


def mean_entropy(probs: torch.Tensor) -> float | None:
    if len(probs) == 0:
        return None
    p = probs.double()
    return (-torch.special.xlogy(p, p).sum(dim=1)).mean().item()


@register
class Calibration(RobustnessCheck):
    name = "calibration"

    def __init__(self, bins: int = 15):
        self.bins = whole(bins, "evaluate.robustness.calibration.bins", 15, minimum=1)

    def measure(self, view: ModelView, ctx: CheckContext) -> dict[str, Any]:
        out = view.outputs
        return {
            "ece": expected_calibration_error(out["retain_test_probs"], out["retain_test_labels"], self.bins),
            "entropy_forget": mean_entropy(out["forget_probs"]),
            "entropy_heldout": mean_entropy(out["heldout_probs"]),
        }

    def headline(self, unlearned: dict[str, Any], vs_retrain: dict[str, Any]) -> dict[str, Any]:
        return {"ece": unlearned.get("ece"), "ece_gap": vs_retrain.get("ece_gap")}

    def compare(self, unlearned: dict[str, Any], reference: dict[str, Any], views: dict[str, ModelView]) -> dict[str, Any]:
        return {
            f"{key}_gap": unlearned[key] - reference[key]
            for key in ("ece", "entropy_forget", "entropy_heldout")
            if unlearned.get(key) is not None and reference.get(key) is not None
        }
