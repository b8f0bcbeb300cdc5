"""Metric functions. Accuracies are percentages; each function documents where its recipe comes from."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def accuracy(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Top-1 accuracy in percent; NaN for an empty subset (no samples means no figure, not 0)."""
    if target.numel() == 0:
        return float("nan")
    return float((pred == target).float().mean() * 100.0)


def per_class_accuracy(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> list[float]:
    """Accuracy per true class in percent, as a list indexed by class id."""
    correct = torch.bincount(target[pred == target], minlength=num_classes).float()
    total = torch.bincount(target, minlength=num_classes).float()
    acc = torch.where(total > 0, correct / total.clamp(min=1) * 100.0, torch.full_like(total, float("nan")))
    return [float(a) for a in acc]


def parameter_distance(params: Iterable[torch.Tensor], reference: Iterable[torch.Tensor]) -> float:
    """Euclidean distance ||theta - theta_0||_2 over matching parameter lists."""
    params, reference = list(params), list(reference)
    diffs = torch._foreach_sub(params, reference)
    norms = torch._foreach_norm(diffs)
    return float(torch.linalg.vector_norm(torch.stack(norms)))
