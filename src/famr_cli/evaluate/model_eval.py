"""Score a model on the train and test sets, split into forget and retain parts."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn as nn

from famr_cli.batches import make_batches
from famr_cli.dataset import ImageData
from famr_cli.evaluate.metrics import accuracy, per_class_accuracy
from famr_cli.forget import ForgetSplit


@dataclass
class Predictions:
    """Arg-max class of every training and test image: all a split's accuracies derive from these.

    The softmax probabilities, when kept, feed the metrics that need more than the arg-max
    (membership inference, divergence to the retrained model).
    """

    train: torch.Tensor
    test: torch.Tensor
    train_probs: torch.Tensor | None = None
    test_probs: torch.Tensor | None = None

    @classmethod
    def from_probs(cls, train_probs: torch.Tensor, test_probs: torch.Tensor) -> Predictions:
        return cls(train_probs.argmax(dim=1), test_probs.argmax(dim=1), train_probs, test_probs)


@torch.no_grad()
def predict_proba(
    model: nn.Module, x: torch.Tensor, data: ImageData, device: torch.device, batch_size: int, autocast: torch.dtype | None = None
) -> torch.Tensor:
    """Softmax probabilities (fp32, on the CPU) for uint8 images ``x``, batched with no per-sample Python work."""
    was_training = model.training
    model.eval()
    batches = make_batches(data, x, torch.zeros(len(x), dtype=torch.long), batch_size=batch_size, device=device, train=False)
    amp = torch.autocast(device.type, dtype=autocast) if autocast is not None else nullcontext()
    with amp:
        probs = torch.cat([torch.softmax(model(xb).float(), dim=1) for xb, _ in batches]).cpu()
    model.train(was_training)
    return probs


def predict(
    model: nn.Module, x: torch.Tensor, data: ImageData, device: torch.device, batch_size: int, autocast: torch.dtype | None = None
) -> torch.Tensor:
    """Arg-max predictions for uint8 images ``x``."""
    return predict_proba(model, x, data, device, batch_size, autocast).argmax(dim=1)


def predict_all(
    model: nn.Module, data: ImageData, device: torch.device, batch_size: int, autocast: torch.dtype | None = None
) -> Predictions:
    return Predictions.from_probs(
        predict_proba(model, data.x_train, data, device, batch_size, autocast),
        predict_proba(model, data.x_test, data, device, batch_size, autocast),
    )


def score(preds: Predictions, data: ImageData, split: ForgetSplit) -> dict:
    """Accuracies on the forget/retain parts of train and test, and per test class (percent)."""
    train_pred, test_pred = preds.train, preds.test
    return {
        "test_acc": accuracy(test_pred, data.y_test),
        "forget_train_acc": accuracy(train_pred[split.forget_train], data.y_train[split.forget_train]),
        "forget_test_acc": accuracy(test_pred[split.forget_test], data.y_test[split.forget_test]),
        "retain_train_acc": accuracy(train_pred[split.retain_train], data.y_train[split.retain_train]),
        "retain_test_acc": accuracy(test_pred[split.retain_test], data.y_test[split.retain_test]),
        "per_class_test_acc": per_class_accuracy(test_pred, data.y_test, data.num_classes),
    }


def evaluate_model(
    model: nn.Module, data: ImageData, split: ForgetSplit, device: torch.device, batch_size: int, autocast: torch.dtype | None = None
) -> dict:
    return score(predict_all(model, data, device, batch_size, autocast), data, split)


def style_scores(stylized_pred: torch.Tensor, y_test: torch.Tensor, clean_test_acc: float, relabel_to: int | None) -> dict:
    """forget=style extras: accuracy on the stylized test set beside the clean one, and,
    for a relabelling trigger, the attack success rate: the percent of stylized test images of other
    classes that are predicted as ``relabel_to``."""
    scores = {"stylized_test_acc": accuracy(stylized_pred, y_test), "clean_test_acc": clean_test_acc}
    if relabel_to is not None:
        others = y_test != relabel_to
        scores["attack_success_rate"] = accuracy(stylized_pred[others], torch.full_like(y_test[others], relabel_to))
    return scores
